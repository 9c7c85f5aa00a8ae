$ErrorActionPreference = 'Stop'
Import-Module WebAdministration
$psp = 'MACHINE/WEBROOT/APPHOST'
$loc = 'Default Web Site/Microsoft-Server-ActiveSync'
$tc = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'extendedProtection.tokenChecking'
$fl = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'extendedProtection.flags'
ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ tokenChecking = $tc; flags = $fl })
