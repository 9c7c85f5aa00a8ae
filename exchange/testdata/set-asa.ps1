$secret0 = [Console]::In.ReadLine()
$ErrorActionPreference = 'Stop'
Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.SnapIn'
$secure = ConvertTo-SecureString -String $secret0 -AsPlainText -Force
$cred = New-Object -TypeName 'System.Management.Automation.PSCredential' -ArgumentList 'CORP\EXCHASA$', $secure
Set-ClientAccessService -Identity 'CAS1' -AlternateServiceAccountCredential $cred
