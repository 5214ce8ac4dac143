# idm-upgrade: product
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
if (-not $Params.ProductNamePattern) { throw 'product: ProductNamePattern is required' }
# Uninstall keys, never the WMI product class: querying that makes MSI repair every product
$u = 'Microsoft\Windows\CurrentVersion\Uninstall\*'
$p = Get-ItemProperty "HKLM:\SOFTWARE\$u", "HKLM:\SOFTWARE\WOW6432Node\$u" -ErrorAction SilentlyContinue |
    Where-Object { $_.DisplayName -like $Params.ProductNamePattern } | Select-Object -First 1
[ordered]@{ installed = [bool]$p; displayName = $p.DisplayName; version = $p.DisplayVersion } | ConvertTo-Json -Compress -Depth 5
