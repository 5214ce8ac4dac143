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
# What the wrapper caught itself (Start-Process could not launch the installer)
$le = $null
if ($r.errorFile -and (Test-Path -LiteralPath $r.errorFile)) { $le = "$(Get-Content -LiteralPath $r.errorFile -Raw)".Trim() }
$alive = $false
# By name too: after a reboot the pid may belong to something else
if ($r.pid) { $alive = [bool](Get-Process -Id $r.pid -ErrorAction SilentlyContinue | Where-Object ProcessName -eq 'powershell') }
$n = [int]$Params.Tail
# A line longer than LineChars is cut to it, with a note: one megabyte-long line must not make a megabyte reply
$w = [int]$Params.LineChars
$tail = @()
$ms = $null
if ($r.log -and (Test-Path -LiteralPath $r.log)) {
    # [string]: on 5.1 a Get-Content line serialises as an object (value, PSPath, PSDrive...)
    if ($n -gt 0) { $tail = @(Get-Content -LiteralPath $r.log -Tail $n | ForEach-Object { [string]$_ } | ForEach-Object { if ($w -gt 0 -and $_.Length -gt $w) { $_.Substring(0, $w) + ' [' + ($_.Length - $w) + ' characters cut]' } else { $_ } }) }
    # The MSI's own result (setup.exe's exit code may be its own); read once the wrapper is done
    if (($null -ne $code) -or -not $alive) {
        $m = Select-String -LiteralPath $r.log -Pattern 'Installation success or error status: (-?\d+)' | Select-Object -Last 1
        if ($m) { $ms = [int]$m.Matches[0].Groups[1].Value }
    }
}
$sn = $null
if ($Params.ServiceName) { $sn = (Get-CimInstance Win32_Service | Where-Object { $_.Name -eq [string]$Params.ServiceName }).StartName }
[ordered]@{ known = $true; token = $r.token; pid = $r.pid; startedAt = $r.startedAt; running = $alive -and ($null -eq $code) -and -not $le
    exitCode = $code; msiStatus = $ms; launchError = $le; logTail = $tail; msiBusy = $busy
    startName = $sn; startNameBefore = $r.startNameBefore } | ConvertTo-Json -Compress -Depth 5
