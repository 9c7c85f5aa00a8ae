"""MIT's side of bench/winrm-kerberos.sh: one mutual Kerberos logon (MIT
GSS-API through python3-gssapi, gss_wrap_iov for sealing) and pywinrm's
SOAP layer, the script N times on one connection, mean ms per run.
KRB5_CONFIG and KRB5CCNAME point at the lab and a TGT."""
import base64, sys, time
import gssapi, gssapi.raw as gr, requests
from winrm.encryption import Encryption
from winrm.protocol import Protocol

url, spn, realm, n, script = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
F = gssapi.RequirementFlag
ctx = gssapi.SecurityContext(name=gssapi.Name(spn + "@" + realm, gssapi.NameType.kerberos_principal),
                             mech=gssapi.OID.from_int_seq("1.3.6.1.5.5.2"), usage="initiate",
                             flags=F.mutual_authentication | F.confidentiality | F.integrity)
s = requests.Session()
r = s.post(url, data=b"", headers={"Authorization": "Negotiate " + base64.b64encode(ctx.step()).decode(),
                                   "Content-Type": "application/soap+xml;charset=UTF-8"})
r.raise_for_status()
ctx.step(base64.b64decode(r.headers["WWW-Authenticate"].split(" ", 1)[1]))


class Auth(requests.auth.AuthBase):
    def __call__(self, req):
        return req

    def wrap_winrm(self, host, message):
        iov = gr.IOV(gr.IOVBufferType.header, message, gr.IOVBufferType.padding, std_layout=False)
        gr.wrap_iov(ctx, iov, confidential=True)
        return iov[1].value + (iov[2].value or b""), iov[0].value

    def unwrap_winrm(self, host, message, header):
        iov = gr.IOV((gr.IOVBufferType.header, False, header), message, std_layout=False)
        gr.unwrap_iov(ctx, iov)
        return iov[1].value


s.auth = Auth()
p = Protocol(url, transport="plaintext", username="unused", password="unused")
p.transport.session, p.transport.encryption = s, Encryption(s, "kerberos")
cmd = "powershell -encodedcommand " + base64.b64encode(script.encode("utf-16-le")).decode()


def run():
    shell = p.open_shell()
    c = p.run_command(shell, cmd)
    _, _, code = p.get_command_output(shell, c)
    p.cleanup_command(shell, c)
    p.close_shell(shell)
    assert code == 0


run()  # warm-up, outside the timing
t = time.perf_counter()
for _ in range(n):
    run()
print("%.3f" % ((time.perf_counter() - t) * 1000 / n))
