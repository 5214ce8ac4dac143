# idm-upgrade: install_status
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/upgrade_handlers.py
$sf = [string]$Params.StateFile
if (-not $sf) { throw 'install_status: StateFile is required' }
# Windows Installer holds this key while an installation runs
$busy = Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Installer\InProgress'
if (-not (Test-Path -LiteralPath $sf)) {
    [ordered]@{ known = $false; msiBusy = $busy } | ConvertTo-Json -Compress -Depth 5
    exit 0
}
$r = Get-Content -LiteralPath $sf -Raw | ConvertFrom-Json
$code = $null
if ($r.exitFile -and (Test-Path -LiteralPath $r.exitFile)) {
    $x = "$(Get-Content -LiteralPath $r.exitFile -Raw)".Trim()
    if ($x -match '^-?\d+$') { $code = [int]$x }
}
$alive = $false
# By name too: after a reboot the pid may belong to something else
if ($r.pid) { $alive = [bool](Get-Process -Id $r.pid -ErrorAction SilentlyContinue | Where-Object ProcessName -eq 'powershell') }
$n = [int]$Params.Tail
$tail = @()
if ($n -gt 0 -and $r.log -and (Test-Path -LiteralPath $r.log)) { $tail = @(Get-Content -LiteralPath $r.log -Tail $n) }
[ordered]@{ known = $true; token = $r.token; pid = $r.pid; startedAt = $r.startedAt; running = $alive -and ($null -eq $code)
    exitCode = $code; logTail = $tail; msiBusy = $busy } | ConvertTo-Json -Compress -Depth 5
