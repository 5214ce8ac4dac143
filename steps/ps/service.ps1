# idm-upgrade: service
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/upgrade_handlers.py
$n = [string]$Params.ServiceName
if (-not $n) { throw 'service: ServiceName is required' }
$f = "Name='{0}'" -f $n.Replace('\', '\\').Replace("'", "\'")
$s = Get-CimInstance Win32_Service -Filter $f
$err = $null
if ($s -and $Params.Start -is [bool] -and $Params.Start -and $s.State -eq 'Stopped' -and $s.StartMode -ne 'Disabled') {
    try { Start-Service -Name $s.Name -WarningAction SilentlyContinue } catch { $err = $_.Exception.Message }
    $s = Get-CimInstance Win32_Service -Filter $f
}
$t = [int]$Params.Tail
$lp = [string]$Params.LogPath
$tail = @()
if ($t -gt 0 -and $lp -and (Test-Path -LiteralPath $lp)) { $tail = @(Get-Content -LiteralPath $lp -Tail $t) }
[ordered]@{ exists = [bool]$s; state = $s.State; startMode = $s.StartMode; startError = $err; logTail = $tail } | ConvertTo-Json -Compress -Depth 5
