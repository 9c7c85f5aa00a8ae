"""MIT's side of bench/winrm-kerberos.sh: one mutual Kerberos logon with
MIT's GSS-API and pywinrm's SOAP layer (winrs/winrstest/testdata/mitwinrm.py),
the script N times on one connection, mean milliseconds per run."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "internal", "wsmantest", "testdata"))
import mitwinrm  # noqa: E402

url, spn, realm, n, script = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
p, _ = mitwinrm.connect(url, spn, realm)
assert mitwinrm.run(p, script)[0] == 0  # warm-up, outside the timing
t = time.perf_counter()
for _ in range(n):
    assert mitwinrm.run(p, script)[0] == 0
print("%.3f" % ((time.perf_counter() - t) * 1000 / n))
