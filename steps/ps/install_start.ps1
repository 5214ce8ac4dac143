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
            errorFile = $r.errorFile; startNameBefore = $r.startNameBefore; alreadyStarted = $true } | ConvertTo-Json -Compress -Depth 5
        exit 0
    }
}
$exe = [string]$Params.Installer
if (-not (Test-Path -LiteralPath $exe -PathType Leaf)) { throw "install_start: installer not found: $exe" }
$ef = "$sf.exit"
$er = "$sf.error"
foreach ($x in $sf, $Params.Log) { [void][IO.Directory]::CreateDirectory([IO.Path]::GetDirectoryName([string]$x)) }
foreach ($x in $ef, $er) { if (Test-Path -LiteralPath $x) { Remove-Item -LiteralPath $x -Force } }
# The account the service runs as (IWA needs its domain account), to compare after the install
$sn = $null
if ($Params.ServiceName) { $sn = (Get-CimInstance Win32_Service | Where-Object { $_.Name -eq [string]$Params.ServiceName }).StartName }
# The wrapper is this fixed text; its data goes in as base64 (A-Z a-z 0-9 + / =), so no value becomes
# code: a quote of any kind in a path or argument (U+2018-U+201B end a string too) stays data
$w = @'
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$d = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('@DATA@')) | ConvertFrom-Json
try {
    $a = @{ FilePath = $d.installer; Wait = $true; PassThru = $true }
    if ($d.arguments) { $a.ArgumentList = $d.arguments }
    $p = Start-Process @a
    Set-Content -LiteralPath $d.exitFile -Value $p.ExitCode
} catch {
    Set-Content -LiteralPath $d.errorFile -Value $_.Exception.Message -Encoding UTF8
    exit 1
}
'@
$data = [ordered]@{ installer = $exe; arguments = [string]$Params.Arguments; exitFile = $ef; errorFile = $er } | ConvertTo-Json -Compress
$in = $w.Replace('@DATA@', [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($data)))
$rec = [ordered]@{ token = $t; pid = $null; startedAt = [DateTime]::UtcNow.ToString('s') + 'Z'; log = [string]$Params.Log
    exitFile = $ef; errorFile = $er; startNameBefore = $sn }
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
