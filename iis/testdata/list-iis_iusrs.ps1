$ErrorActionPreference = 'Stop'
ConvertTo-Json -Compress -InputObject @(Get-LocalGroupMember -Group 'IIS_IUSRS' | ForEach-Object -MemberName Name)
