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
$p = Get-ItemProperty "HKLM:\SOFTWARE\$u", "HKLM:\SOFTWARE\WOW6432Node\$u" -ErrorAction SilentlyContinue |
    Where-Object { $_.DisplayName -like $Params.ProductNamePattern } | Select-Object -First 1
$n = ([string]$Params.ServiceName).Replace("'", "\'")
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
