$ErrorActionPreference = 'Stop'
Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.SnapIn'
$cfg = Get-ClientAccessService -Identity 'CAS1' -IncludeAlternateServiceAccountCredentialStatus | Select-Object -ExpandProperty AlternateServiceAccountConfiguration
$creds = @($cfg | Select-Object -ExpandProperty EffectiveCredentials)
$users = @($creds | Select-Object -ExpandProperty Credential | Select-Object -ExpandProperty UserName)
$added = @($creds | Select-Object -ExpandProperty WhenAddedUTC | Get-Date -Format 'o')
ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ users = $users; added = $added })
