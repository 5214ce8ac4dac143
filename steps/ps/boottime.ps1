# idm-upgrade: boottime
# The last boot time in UTC: a rebooted host is recognised by a boot time that changed.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$os = Get-CimInstance -ClassName Win32_OperatingSystem
[pscustomobject]@{
    bootTime = $os.LastBootUpTime.ToUniversalTime().ToString('s') + 'Z'
} | ConvertTo-Json -Compress -Depth 5
