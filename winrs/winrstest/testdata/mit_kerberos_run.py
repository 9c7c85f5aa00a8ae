"""Runs one PowerShell script on a WinRM host over plain HTTP with Kerberos
message encryption, MIT krb5 on the GSS-API side (see mitwinrm.py).
Arguments come as JSON on stdin; prints the outcome as JSON."""
import json
import sys

import mitwinrm

a = json.load(sys.stdin)
out = {}
try:
    p, auth = mitwinrm.connect(a["url"], a["spn"], a["realm"])
    code, stdout, stderr = mitwinrm.run(p, a["script"])
    out.update({"status": code, "stdout": stdout, "stderr": stderr, "signature_length": auth.header_length})
except Exception as e:  # the test reads the kind of failure
    import traceback
    traceback.print_exc()
    out.update({"error": type(e).__name__, "message": str(e)})
json.dump(out, sys.stdout)
