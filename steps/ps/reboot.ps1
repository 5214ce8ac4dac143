# idm-upgrade: reboot
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/ps_handlers.py
foreach ($k in 'Token', 'MarkerDirectory') { if (-not $Params.$k) { throw "reboot: $k is required" } }
$t = [string]$Params.Token
if ($t -notmatch '^[A-Za-z0-9._-]+$') { throw 'reboot: Token may hold only letters, digits and . _ -' }
$d = [int]$Params.DelaySeconds
if ($d -lt 0 -or $d -gt 315360000) { throw 'reboot: DelaySeconds must be 0-315360000' }
$margin = [int]$Params.MarginSeconds
# /c takes 512 characters; a " or a trailing \ would break the quoting
$why = ([string]$Params.Reason).Replace('"', "'")
if ($why.Length -gt 512) { $why = $why.Substring(0, 512) }
$why = $why.TrimEnd('\')
if (-not $why) { $why = 'idm-upgrade' }
$bootAt = (Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime()
$boot = $bootAt.ToString('s') + 'Z'
$dir = [string]$Params.MarkerDirectory
$m = [IO.Path]::Combine($dir, "reboot-$t.json")
function Emit($i, $s, $r, $c, $b, $q) {
    [ordered]@{ issued = $i; alreadyScheduled = $s; alreadyRebooted = $r; shutdownExitCode = $c; bootTime = $b; requestedAt = $q } | ConvertTo-Json -Compress -Depth 5
}
# Once per token: the marker holds the boot time the reboot was asked from and the moment it was asked
if (Test-Path -LiteralPath $m) {
    $mk = Get-Content -LiteralPath $m -Raw | ConvertFrom-Json
    $mb = [string]$mk.bootTime
    $mq = $null
    if ($mk.requestedAt) {
        $mq = [string]$mk.requestedAt
        $styles = [Globalization.DateTimeStyles]'AssumeUniversal, AdjustToUniversal'
        $asked = [DateTime]::ParseExact($mq, "yyyy-MM-dd'T'HH:mm:ss'Z'", [Globalization.CultureInfo]::InvariantCulture, $styles)
        # A clock step (VM time sync) moves LastBootUpTime too: only a boot after the request is the reboot
        $done = $bootAt -gt $asked.AddSeconds(-$margin)
    } else {
        $done = $mb -ne $boot  # a marker written before requestedAt was kept
    }
    Emit $false (-not $done) $done $null $mb $mq
    exit 0
}
[void][IO.Directory]::CreateDirectory($dir)
$q = [DateTime]::UtcNow.ToString('s') + 'Z'
[ordered]@{ token = $t; bootTime = $boot; requestedAt = $q } | ConvertTo-Json -Compress | Set-Content -LiteralPath $m -Encoding UTF8
# /d p:4:1: "Application: Maintenance (Planned)"; without it event 1074 logs "Other (Unplanned)"
$a = @('/r', '/t', $d, '/d', 'p:4:1', '/c', $why)
# Native stderr must not become a terminating error: judge by the exit code
$ErrorActionPreference = 'Continue'
& shutdown.exe @a 2>$null | Out-Null
$c = $LASTEXITCODE
# 1190: another shutdown is scheduled; abort it and ask once more
if ($c -eq 1190) {
    & shutdown.exe /a 2>$null | Out-Null
    & shutdown.exe @a 2>$null | Out-Null
    $c = $LASTEXITCODE
}
$ErrorActionPreference = 'Stop'
# 1115: a shutdown is already under way
if ($c -ne 0 -and $c -ne 1115) {
    Remove-Item -LiteralPath $m -Force
    $hint = ''
    if ($c -eq 5) { $hint = ' (access denied: the account lacks SeRemoteShutdownPrivilege)' }
    [Console]::Error.WriteLine("reboot: shutdown.exe /r failed with exit code $c$hint")
    exit 6
}
Emit $true $false $false $c $boot $q
