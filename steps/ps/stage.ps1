# idm-upgrade: stage
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/upgrade_handlers.py
foreach ($k in 'Url', 'Sha256', 'Directory', 'FileName') { if (-not $Params.$k) { throw "stage: $k is required" } }
$url = [string]$Params.Url
$want = ([string]$Params.Sha256).ToLowerInvariant()
$name = [string]$Params.FileName
if ($want -notmatch '^[0-9a-f]{64}$') { throw 'stage: Sha256 must be 64 hex digits' }
if ($name -match '[\\/:]' -or $name -eq '..') { throw 'stage: FileName must be a bare file name' }
# A share read from a WinRM session is a second hop: ANONYMOUS LOGON, Access is denied
if ($url -notmatch '^https?://') { throw 'stage: Url must be http:// or https:// (a file share is a second hop from WinRM)' }
$dir = [string]$Params.Directory
$path = [IO.Path]::Combine($dir, $name)
$sw = [Diagnostics.Stopwatch]::StartNew()
function Hash($f) { (Get-FileHash -LiteralPath $f -Algorithm SHA256).Hash.ToLowerInvariant() }
function Emit($reused) {
    [ordered]@{ path = $path; sha256 = $want; bytes = (Get-Item -LiteralPath $path).Length; reused = $reused
        seconds = [math]::Round($sw.Elapsed.TotalSeconds, 2) } | ConvertTo-Json -Compress -Depth 5
}
[void][IO.Directory]::CreateDirectory($dir)
if (Test-Path -LiteralPath $path) {
    if ((Hash $path) -eq $want) { Emit $true; exit 0 }
    Remove-Item -LiteralPath $path -Force
}
$tmp = "$path.partial"
if (Test-Path -LiteralPath $tmp) { Remove-Item -LiteralPath $tmp -Force }
try {
    [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
    Invoke-WebRequest -UseBasicParsing -Uri $url -OutFile $tmp
} catch {
    if (Test-Path -LiteralPath $tmp) { Remove-Item -LiteralPath $tmp -Force }
    [Console]::Error.WriteLine('download of {0} failed: {1}' -f $url, $_.Exception.Message)
    exit 2
}
$got = Hash $tmp
if ($got -ne $want) {
    Remove-Item -LiteralPath $tmp -Force
    [Console]::Error.WriteLine('SHA-256 mismatch for {0}: expected {1}, got {2}; the downloaded file was deleted' -f $name, $want, $got)
    exit 3
}
Move-Item -LiteralPath $tmp -Destination $path -Force
Emit $false
