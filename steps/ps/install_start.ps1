# idm-upgrade: install_start
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/upgrade_handlers.py
foreach ($k in 'Installer', 'Log', 'StateFile', 'Token') { if (-not $Params.$k) { throw "install_start: $k is required" } }
$sf = [string]$Params.StateFile
$t = [string]$Params.Token
# Once per token: never a second installer
if (Test-Path -LiteralPath $sf) {
    $r = Get-Content -LiteralPath $sf -Raw | ConvertFrom-Json
    if ($r.token -eq $t) {
        [ordered]@{ token = $t; pid = $r.pid; startedAt = $r.startedAt; log = $r.log; exitFile = $r.exitFile
            alreadyStarted = $true } | ConvertTo-Json -Compress -Depth 5
        exit 0
    }
}
$exe = [string]$Params.Installer
if (-not (Test-Path -LiteralPath $exe -PathType Leaf)) { throw "install_start: installer not found: $exe" }
function Q($s) { "'" + ([string]$s).Replace("'", "''") + "'" }
$ef = "$sf.exit"
foreach ($x in $sf, $Params.Log) { [void][IO.Directory]::CreateDirectory([IO.Path]::GetDirectoryName([string]$x)) }
if (Test-Path -LiteralPath $ef) { Remove-Item -LiteralPath $ef -Force }
$al = ''
if ($Params.Arguments) { $al = ' -ArgumentList ' + (Q $Params.Arguments) }
$in = '$p = Start-Process -FilePath ' + (Q $exe) + $al + ' -Wait -PassThru; Set-Content -LiteralPath ' + (Q $ef) + ' -Value $p.ExitCode'
$rec = [ordered]@{ token = $t; pid = $null; startedAt = [DateTime]::UtcNow.ToString('s') + 'Z'; log = [string]$Params.Log; exitFile = $ef }
# Recorded before the launch
$rec | ConvertTo-Json -Compress | Set-Content -LiteralPath $sf -Encoding UTF8
# Win32_Process.Create: outlives this WinRM shell, unlike Start-Process
$rv = 'no result'
try {
    $cl = 'powershell.exe -NoProfile -NonInteractive -EncodedCommand ' + [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes($in))
    $c = Invoke-CimMethod -ClassName Win32_Process -MethodName Create -Arguments @{ CommandLine = $cl }
    $rv = $c.ReturnValue
} catch { $rv = $_.Exception.Message }
if ($rv -ne 0) {
    Remove-Item -LiteralPath $sf -Force
    [Console]::Error.WriteLine("install_start: Win32_Process.Create failed: $rv")
    exit 5
}
$rec.pid = [int]$c.ProcessId
$rec | ConvertTo-Json -Compress | Set-Content -LiteralPath $sf -Encoding UTF8
$rec.alreadyStarted = $false
$rec | ConvertTo-Json -Compress -Depth 5
