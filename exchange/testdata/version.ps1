$ErrorActionPreference = 'Stop'
Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.SnapIn'
Get-ExchangeServer -Identity 'CAS1' | Select-Object -ExpandProperty AdminDisplayVersion
