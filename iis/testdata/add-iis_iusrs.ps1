$ErrorActionPreference = 'Stop'
Add-LocalGroupMember -Group 'IIS_IUSRS' -Member 'CORP\svc_awseg'
