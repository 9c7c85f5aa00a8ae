$ErrorActionPreference = 'Stop'
Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.SnapIn'
$cred = Get-ClientAccessService -Identity 'CAS1' -IncludeAlternateServiceAccountCredentialPassword | Select-Object -ExpandProperty AlternateServiceAccountConfiguration | Select-Object -ExpandProperty EffectiveCredentials | Select-Object -First 1 | Select-Object -ExpandProperty Credential
Set-ClientAccessServer -Identity 'CAS3' -AlternateServiceAccountCredential $cred
