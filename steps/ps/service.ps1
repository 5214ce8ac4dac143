# idm-upgrade: service
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/ps_handlers.py
$n = [string]$Params.ServiceName
if (-not $n) { throw 'service: ServiceName is required' }
$f = "Name='{0}'" -f $n.Replace('\', '\\').Replace("'", "\'")
$s = Get-CimInstance Win32_Service -Filter $f
$err = $null
if ($s -and $Params.Start -is [bool] -and $Params.Start -and $s.State -eq 'Stopped' -and $s.StartMode -ne 'Disabled') {
    # ServiceController.Start asks the SCM and returns; Start-Service would block, with no timeout, for as long
    # as the service stays Start Pending. The caller polls with its own deadline.
    try { [void](Get-Service -Name $s.Name).Start() } catch {
        $e = $_.Exception
        if ($e.InnerException) { $e = $e.InnerException }
        $err = $e.Message
    }
    $s = Get-CimInstance Win32_Service -Filter $f
}
$t = [int]$Params.Tail
$lp = [string]$Params.LogPath
# A line longer than LineChars is cut to it, with a note: one megabyte-long line must not make a megabyte reply
$w = [int]$Params.LineChars
$tail = @()
# On 5.1 each line from Get-Content carries PSPath/PSDrive NoteProperties and ConvertTo-Json writes it as an
# object; [string] makes it the bare line again.
if ($t -gt 0 -and $lp -and (Test-Path -LiteralPath $lp)) { $tail = @(Get-Content -LiteralPath $lp -Tail $t | ForEach-Object { [string]$_ } | ForEach-Object { if ($w -gt 0 -and $_.Length -gt $w) { $_.Substring(0, $w) + ' [' + ($_.Length - $w) + ' characters cut]' } else { $_ } }) }
[ordered]@{ exists = [bool]$s; state = $s.State; startMode = $s.StartMode; startError = $err; logTail = $tail } | ConvertTo-Json -Compress -Depth 5
