# idm-upgrade: preflight
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/ps_handlers.py
foreach ($k in 'ServiceName', 'ProductNamePattern', 'Drive') { if (-not $Params.$k) { throw "preflight: $k is required" } }
$d = $Params.Drive
if ($d -notmatch '^[A-Za-z]:$') { throw 'preflight: Drive must look like C:' }
$os = Get-CimInstance Win32_OperatingSystem
$cs = Get-CimInstance Win32_ComputerSystem
# Uninstall keys, never the WMI product class: querying that makes MSI repair every product
$u = 'Microsoft\Windows\CurrentVersion\Uninstall\*'
# The highest version, SystemComponent entries left out (as product.ps1): "19.03.0.1 Build 123" sorts as 19.03.0.1
function Key($v) {
    $m = [regex]::Match([string]$v, '^\s*\d+(\.\d+)*')
    if (-not $m.Success) { return '' }
    (($m.Value.Trim() -split '\.') | ForEach-Object { $_.TrimStart('0').PadLeft(12, '0') }) -join '.'
}
$p = Get-ItemProperty "HKLM:\SOFTWARE\$u", "HKLM:\SOFTWARE\WOW6432Node\$u" -ErrorAction SilentlyContinue |
    Where-Object { $_.DisplayName -like $Params.ProductNamePattern -and $_.SystemComponent -ne 1 } |
    Sort-Object -Property @{ Expression = { Key $_.DisplayVersion } } -Descending | Select-Object -First 1
# WQL string: backslash and quote escaped
$n = ([string]$Params.ServiceName).Replace('\', '\\').Replace("'", "\'")
$svc = Get-CimInstance Win32_Service -Filter "Name='$n'"
$disk = Get-CimInstance Win32_LogicalDisk -Filter "DeviceID='$d'"
$free = $null
if ($disk) { $free = [int64]$disk.FreeSpace }
$jh = [Environment]::GetEnvironmentVariable('JAVA_HOME', 'Machine')
$jv = $null
if ($jh -and (Test-Path -LiteralPath "$jh\bin\java.exe")) { $jv = (Get-Item -LiteralPath "$jh\bin\java.exe").VersionInfo.FileVersion }
$r = @()
$cv = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion'
if (Test-Path "$cv\Component Based Servicing\RebootPending") { $r += 'ComponentBasedServicing' }
if (Test-Path "$cv\WindowsUpdate\Auto Update\RebootRequired") { $r += 'WindowsUpdate' }
# A value, not a key
if ((Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager').PendingFileRenameOperations) { $r += 'PendingFileRenameOperations' }
$cn = 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName'
if ((Get-ItemProperty "$cn\ActiveComputerName").ComputerName -ne (Get-ItemProperty "$cn\ComputerName").ComputerName) { $r += 'ComputerRename' }
[ordered]@{
    computerName = $env:COMPUTERNAME
    os = @{ caption = $os.Caption; version = $os.Version }
    connector = @{ installed = [bool]$p; displayName = $p.DisplayName; version = $p.DisplayVersion }
    service = @{ name = $Params.ServiceName; exists = [bool]$svc; state = $svc.State; startMode = $svc.StartMode }
    java = @{ home = $jh; version = $jv }
    disk = @{ drive = $d; freeBytes = $free }
    pendingReboot = @{ any = $r.Count -gt 0; reasons = $r }
    machine = @{ manufacturer = $cs.Manufacturer; model = $cs.Model; virtual = $cs.Manufacturer -like 'VMware*' }
    bootTime = $os.LastBootUpTime.ToUniversalTime().ToString('s') + 'Z'
} | ConvertTo-Json -Compress -Depth 5
