$ErrorActionPreference = 'Stop'
Import-Module WebAdministration
$psp = 'MACHINE/WEBROOT/APPHOST'
$loc = 'Default Web Site/Microsoft-Server-ActiveSync'
Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/basicAuthentication' -Name 'enabled' -Value $false
Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'enabled' -Value $true
Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'useAppPoolCredentials' -Value $true
Clear-WebConfiguration -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication/providers'
Add-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication/providers' -Name '.' -Value @{ value = 'Negotiate' }
