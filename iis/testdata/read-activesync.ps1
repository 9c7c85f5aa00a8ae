$ErrorActionPreference = 'Stop'
Import-Module WebAdministration
$psp = 'MACHINE/WEBROOT/APPHOST'
$loc = 'Default Web Site/Microsoft-Server-ActiveSync'
$basic = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/basicAuthentication' -Name 'enabled' | Select-Object -ExpandProperty Value
$windows = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'enabled' | Select-Object -ExpandProperty Value
$kernel = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'useKernelMode' | Select-Object -ExpandProperty Value
$apppool = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name 'useAppPoolCredentials' | Select-Object -ExpandProperty Value
$providers = @(Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter 'system.webServer/security/authentication/windowsAuthentication/providers' -Name 'Collection' | ForEach-Object -MemberName value)
ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ basic = $basic; windows = $windows; useKernelMode = $kernel; useAppPoolCredentials = $apppool; providers = $providers })
