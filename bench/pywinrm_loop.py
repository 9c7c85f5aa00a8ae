"""pywinrm's side of bench/winrm.sh: one Session (one NTLM logon, sealed
messages), the script N times, mean milliseconds per run."""
import base64, os, sys, time
from cryptography.hazmat.bindings.openssl.binding import Binding
Binding()  # OpenSSL's legacy provider, for ntlm-auth's MD4 (see winrs/winrstest/testdata)
import winrm

addr, user, n, script = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = winrm.Session("http://%s/wsman" % addr, auth=(user, os.environ["SEGKCD_WINRM_PASSWORD"]),
                  transport="ntlm", message_encryption="always")
cmd = "powershell -encodedcommand " + base64.b64encode(script.encode("utf-16-le")).decode()
assert s.run_cmd(cmd).status_code == 0  # logon, outside the timing
t = time.perf_counter()
for _ in range(n):
    assert s.run_cmd(cmd).status_code == 0
print("%.3f" % ((time.perf_counter() - t) * 1000 / n))
