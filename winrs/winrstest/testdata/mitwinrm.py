"""A WinRM client over plain HTTP with Kerberos message encryption whose
GSS-API side is MIT krb5 (Debian's python3-gssapi: gss_wrap_iov and
gss_unwrap_iov, as Windows' and pywinrm's clients split the token) and whose
WS-Man side is pywinrm's Protocol and Encryption. Used by the test host's
interop test (mit_kerberos_run.py) and by bench/mit_kerberos_loop.py.
KRB5_CONFIG and KRB5CCNAME must point at the realm and a TGT."""
import base64

import gssapi
import gssapi.raw as gr
import requests
from winrm.encryption import Encryption
from winrm.protocol import Protocol

SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")


class _Auth(requests.auth.AuthBase):
    """What pywinrm's Encryption asks of a Kerberos auth object."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.header_length = None  # of the last sealed message

    def __call__(self, req):
        return req

    def wrap_winrm(self, host, message):
        iov = gr.IOV(gr.IOVBufferType.header, message, gr.IOVBufferType.padding, std_layout=False)
        gr.wrap_iov(self.ctx, iov, confidential=True)
        self.header_length = len(iov[0].value)
        return iov[1].value + (iov[2].value or b""), iov[0].value

    def unwrap_winrm(self, host, message, header):
        iov = gr.IOV((gr.IOVBufferType.header, False, header), message, std_layout=False)
        gr.unwrap_iov(self.ctx, iov)
        return iov[1].value


def connect(url, spn, realm):
    """Logs on (an empty POST, mutual authentication: the host answers 200
    with its AP-REP) and returns a pywinrm Protocol that seals every
    message with the context, and the auth object."""
    F = gssapi.RequirementFlag
    ctx = gssapi.SecurityContext(name=gssapi.Name(spn + "@" + realm, gssapi.NameType.kerberos_principal),
                                 mech=SPNEGO, usage="initiate",
                                 flags=F.mutual_authentication | F.confidentiality | F.integrity)
    session = requests.Session()
    r = session.post(url, data=b"", headers={"Authorization": "Negotiate " + base64.b64encode(ctx.step()).decode(),
                                             "Content-Type": "application/soap+xml;charset=UTF-8"})
    r.raise_for_status()
    ctx.step(base64.b64decode(r.headers["WWW-Authenticate"].split(" ", 1)[1]))
    if not ctx.complete:
        raise RuntimeError("context not complete after the AP-REP")
    session.auth = _Auth(ctx)
    p = Protocol(url, transport="plaintext", username="unused", password="unused")
    p.transport.session = session
    p.transport.encryption = Encryption(session, "kerberos")
    return p, session.auth


def run(p, script):
    """Runs a PowerShell script; returns (exit code, stdout, stderr) as str."""
    shell = p.open_shell()
    cmd = p.run_command(shell, "powershell -encodedcommand " +
                        base64.b64encode(script.encode("utf-16-le")).decode())
    stdout, stderr, code = p.get_command_output(shell, cmd)
    p.cleanup_command(shell, cmd)
    p.close_shell(shell)
    return code, stdout.decode(), stderr.decode()
