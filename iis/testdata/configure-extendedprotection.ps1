$ErrorActionPreference = 'Stop'
Import-Module WebAdministration
$psp = 'MACHINE/WEBROOT/APPHOST'
$loc = 'Default Web Site/Microsoft-Server-ActiveSync'
Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'extendedProtection.tokenChecking' -Value 'Require'
Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'extendedProtection.flags' -Value 'None'
