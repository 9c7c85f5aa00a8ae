"""Runs one PowerShell script on a WinRM host with pywinrm (Debian's
python3-winrm), an independent client, and prints the outcome as JSON.
Arguments come as JSON on stdin, so no secret is on the command line."""
import base64
import json
import sys

# Debian 12's ntlm-auth 1.4 takes MD4 from hashlib, which OpenSSL 3 keeps in
# its legacy provider. python3-cryptography (a dependency of requests-ntlm)
# loads that provider when its binding starts; requests-ntlm only imports it
# on HTTPS, so start it here for plain HTTP too. (ntlm-auth 1.5 carries its
# own MD4.)
from cryptography.hazmat.bindings.openssl.binding import Binding
Binding()

import winrm

a = json.load(sys.stdin)
kw = {"transport": a["transport"], "message_encryption": a.get("encryption", "auto"),
      "server_cert_validation": "validate"}
if a.get("ca"):
    kw["ca_trust_path"] = a["ca"]
if a.get("cert"):
    kw["cert_pem"], kw["cert_key_pem"] = a["cert"], a["key"]
try:
    s = winrm.Session(a["url"], auth=(a.get("user"), a.get("password")), **kw)
    # run_cmd, not run_ps: pywinrm 0.3.0's run_ps fails on Python 3 when
    # stderr is not empty (it calls str.startswith on bytes).
    encoded = base64.b64encode(a["script"].encode("utf-16-le")).decode("ascii")
    r = s.run_cmd("powershell -encodedcommand " + encoded)
    out = {"status": r.status_code, "stdout": r.std_out.decode(), "stderr": r.std_err.decode()}
except Exception as e:  # the test reads the kind of failure
    import traceback
    traceback.print_exc()
    out = {"error": type(e).__name__, "message": str(e)}
json.dump(out, sys.stdout)
