"""Runs one PowerShell script on a WinRM host over plain HTTP with Kerberos
message encryption, the GSS-API side done by MIT krb5 (Debian's
python3-gssapi, gss_wrap_iov / gss_unwrap_iov as Windows' and pywinrm's
clients use them) and the WS-Man side by pywinrm's Protocol and Encryption.
Arguments come as JSON on stdin; KRB5_CONFIG and KRB5CCNAME point at the
lab and a ccache with the user's TGT. Prints the outcome as JSON."""
import base64
import json
import sys

import gssapi
import gssapi.raw as gr
import requests
from winrm.encryption import Encryption
from winrm.protocol import Protocol

a = json.load(sys.stdin)
SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
out = {}
try:
    name = gssapi.Name(a["spn"] + "@" + a["realm"], gssapi.NameType.kerberos_principal)
    flags = gssapi.RequirementFlag
    ctx = gssapi.SecurityContext(name=name, mech=SPNEGO, usage="initiate",
                                 flags=flags.mutual_authentication | flags.confidentiality | flags.integrity)
    session = requests.Session()
    # The logon: an empty POST, answered 200 with the AP-REP (mutual).
    r = session.post(a["url"], data=b"", headers={
        "Authorization": "Negotiate " + base64.b64encode(ctx.step()).decode(),
        "Content-Type": "application/soap+xml;charset=UTF-8"})
    r.raise_for_status()
    ctx.step(base64.b64decode(r.headers["WWW-Authenticate"].split(" ", 1)[1]))
    if not ctx.complete:
        raise RuntimeError("context not complete after the AP-REP")

    class Auth(requests.auth.AuthBase):
        """What pywinrm's Encryption asks of a Kerberos auth object."""
        def __call__(self, req):
            return req

        def wrap_winrm(self, host, message):
            iov = gr.IOV(gr.IOVBufferType.header, message, gr.IOVBufferType.padding, std_layout=False)
            gr.wrap_iov(ctx, iov, confidential=True)
            out["signature_length"] = len(iov[0].value)
            return iov[1].value + (iov[2].value or b""), iov[0].value

        def unwrap_winrm(self, host, message, header):
            iov = gr.IOV((gr.IOVBufferType.header, False, header), message, std_layout=False)
            gr.unwrap_iov(ctx, iov)
            return iov[1].value

    session.auth = Auth()
    p = Protocol(a["url"], transport="plaintext", username="unused", password="unused")
    p.transport.session = session
    p.transport.encryption = Encryption(session, "kerberos")
    shell = p.open_shell()
    cmd = p.run_command(shell, "powershell -encodedcommand " +
                        base64.b64encode(a["script"].encode("utf-16-le")).decode())
    stdout, stderr, code = p.get_command_output(shell, cmd)
    p.cleanup_command(shell, cmd)
    p.close_shell(shell)
    out.update({"status": code, "stdout": stdout.decode(), "stderr": stderr.decode()})
except Exception as e:  # the test reads the kind of failure
    import traceback
    traceback.print_exc()
    out.update({"error": type(e).__name__, "message": str(e)})
json.dump(out, sys.stdout)
