# idm-upgrade: filehash
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/upgrade_handlers.py
$p = [string]$Params.Path
if (-not $p) { throw 'filehash: Path is required' }
$h = $null
$b = $null
$e = Test-Path -LiteralPath $p -PathType Leaf
if ($e) {
    $h = (Get-FileHash -LiteralPath $p -Algorithm SHA256).Hash.ToLowerInvariant()
    $b = (Get-Item -LiteralPath $p).Length
}
[ordered]@{ exists = $e; path = $p; sha256 = $h; bytes = $b } | ConvertTo-Json -Compress -Depth 5
