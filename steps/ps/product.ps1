# idm-upgrade: product
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Output fields: see sandbox/upgrade_handlers.py
if (-not $Params.ProductNamePattern) { throw 'product: ProductNamePattern is required' }
# Uninstall keys, never the WMI product class: querying that makes MSI repair every product
$u = 'Microsoft\Windows\CurrentVersion\Uninstall\*'
$all = @(Get-ItemProperty "HKLM:\SOFTWARE\$u", "HKLM:\SOFTWARE\WOW6432Node\$u" -ErrorAction SilentlyContinue |
    Where-Object { $_.DisplayName -like $Params.ProductNamePattern })
# The highest version, SystemComponent entries left out (parts Programs & Features hides); the key
# reads the leading dotted numbers only, so "19.03.0.1 Build 123" sorts as 19.03.0.1
function Key($v) {
    $m = [regex]::Match([string]$v, '^\s*\d+(\.\d+)*')
    if (-not $m.Success) { return '' }
    (($m.Value.Trim() -split '\.') | ForEach-Object { $_.TrimStart('0').PadLeft(12, '0') }) -join '.'
}
$p = $all | Where-Object { $_.SystemComponent -ne 1 } | Sort-Object -Property @{ Expression = { Key $_.DisplayVersion } } -Descending |
    Select-Object -First 1
[ordered]@{ installed = [bool]$p; displayName = $p.DisplayName; version = $p.DisplayVersion; entries = $all.Count } | ConvertTo-Json -Compress -Depth 5
