package winrstest_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segkcd/segkcd/winrs/winrstest"
)

// pywinrm (Debian's python3-winrm, with requests-ntlm and ntlm-auth) is an
// independent WinRM client. These tests hold the test host's NTLM,
// MS-WSMV message encryption, channel binding and certificate logons to
// it, so that winrs's tests against the host are not our code
// agreeing with itself.

// debianPython is the interpreter python3-winrm installs for; a python3
// earlier on PATH (pyenv, a venv) would not see it.
const debianPython = "/usr/bin/python3"

type pyResult struct {
	Status  int    `json:"status"`
	Stdout  string `json:"stdout"`
	Stderr  string `json:"stderr"`
	Error   string `json:"error"`
	Message string `json:"message"`
	Trace   string `json:"-"` // pywinrm's traceback, when it failed
}

// needPython skips (or under CI=true fails) a test when Debian's python3
// lacks a module that make deps installs.
func needPython(t *testing.T, modules string) {
	t.Helper()
	if exec.Command(debianPython, "-c", "import "+modules).Run() != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 cannot import %s (make deps installs python3-winrm and python3-gssapi)", modules)
		}
		t.Skipf("python3 cannot import %s; make deps installs python3-winrm and python3-gssapi", modules)
	}
}

// runPeer runs a Python peer script with JSON arguments on stdin and
// decodes the JSON it prints into out; env adds to the environment. It
// returns the script's stderr (a traceback, when it failed).
func runPeer(t *testing.T, script string, args map[string]string, env []string, out any) string {
	t.Helper()
	in, _ := json.Marshal(args)
	cmd := exec.Command(debianPython, script)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s printed %q: %v", script, b, err)
	}
	return stderr.String()
}

func pywinrm(t *testing.T, args map[string]string) pyResult {
	t.Helper()
	needPython(t, "winrm")
	var r pyResult
	r.Trace = runPeer(t, "testdata/pywinrm_run.py", args, nil, &r)
	return r
}

const (
	pyUser     = `CORP\admin`
	pyPassword = "Adm1n-pw!"
	pyScript   = "$ErrorActionPreference = 'Stop'\nGet-LocalGroupMember -Group 'IIS_IUSRS' | ForEach-Object -MemberName Name | ConvertTo-Json -Compress"
	pyOutput   = `"NT AUTHORITY\\IUSR"`
)

func TestPywinrmNTLMEncrypted(t *testing.T) {
	// Two TimedOut faults per command first: pywinrm must read them as
	// Windows' OperationTimeout (fault code 2150858793) and ask again.
	srv, err := winrstest.StartWith(winrstest.NewHost("cas1"), winrstest.Options{User: pyUser, Password: pyPassword, ReceiveTimeouts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := fmt.Sprintf("http://%s/wsman", srv.Addr())
	r := pywinrm(t, map[string]string{"url": url, "transport": "ntlm", "encryption": "always",
		"user": pyUser, "password": pyPassword, "script": pyScript})
	if r.Error != "" || r.Status != 0 || strings.TrimSpace(r.Stdout) != pyOutput {
		t.Fatalf("pywinrm with NTLM sealing: %+v", r)
	}
	if srv.Sealed() < 4 || len(srv.Logons()) != 1 || srv.Logons()[0] != "ntlm:"+pyUser || srv.Requests("Receive") != 3 {
		t.Fatalf("sealed %d, logons %v, receives %d", srv.Sealed(), srv.Logons(), srv.Requests("Receive"))
	}
	// A failing script comes back as pywinrm's error stream, sealed too.
	r = pywinrm(t, map[string]string{"url": url, "transport": "ntlm", "encryption": "always",
		"user": pyUser, "password": pyPassword, "script": "$ErrorActionPreference = 'Stop'\nInvoke-Expression 'calc'"})
	if r.Status != 1 || !strings.Contains(r.Stderr, "not recognized") {
		t.Fatalf("failing script: %+v", r)
	}
	// In clear, the host refuses (AllowUnencrypted is false) ...
	r = pywinrm(t, map[string]string{"url": url, "transport": "ntlm", "encryption": "never",
		"user": pyUser, "password": pyPassword, "script": pyScript})
	if r.Error == "" || !strings.Contains(r.Message, "Code 400") {
		t.Fatalf("unencrypted message: %+v", r)
	}
	// ... and a wrong password is refused.
	r = pywinrm(t, map[string]string{"url": url, "transport": "ntlm", "encryption": "always",
		"user": pyUser, "password": "wrong", "script": pyScript})
	if r.Error != "InvalidCredentialsError" {
		t.Fatalf("wrong password: %+v", r)
	}
}

func startTLS(t *testing.T, o winrstest.Options) (*winrstest.Server, *winrstest.PKI, string) {
	t.Helper()
	srv, pki := winrstest.StartTLSTest(t, winrstest.NewHost("cas1"), o)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pki.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, pki, ca
}

// pywinrm's requests-ntlm binds the logon to the TLS certificate; the host
// requires that binding, so this passes only if both compute it alike.
func TestPywinrmNTLMChannelBinding(t *testing.T) {
	srv, _, ca := startTLS(t, winrstest.Options{User: pyUser, Password: pyPassword, RequireChannelBindings: true})
	r := pywinrm(t, map[string]string{"url": fmt.Sprintf("https://127.0.0.1:%d/wsman", srv.Port()), "transport": "ntlm",
		"ca": ca, "user": pyUser, "password": pyPassword, "script": pyScript})
	if r.Error != "" || strings.TrimSpace(r.Stdout) != pyOutput {
		t.Fatalf("pywinrm NTLM over HTTPS: %+v", r)
	}
	if srv.Sealed() != 0 || len(srv.Logons()) != 1 {
		t.Fatalf("sealed %d logons %v", srv.Sealed(), srv.Logons())
	}
}

func TestPywinrmCertificate(t *testing.T) {
	srv, pki, ca := startTLS(t, winrstest.Options{CertificateUsers: map[string]string{"admin@corp.example": pyUser}})
	dir := t.TempDir()
	cert, err := pki.ClientCert("admin@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "c.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	os.WriteFile(filepath.Join(dir, "k.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	r := pywinrm(t, map[string]string{"url": fmt.Sprintf("https://127.0.0.1:%d/wsman", srv.Port()), "transport": "certificate",
		"ca": ca, "cert": filepath.Join(dir, "c.pem"), "key": filepath.Join(dir, "k.pem"), "script": pyScript})
	if r.Error != "" || strings.TrimSpace(r.Stdout) != pyOutput {
		t.Fatalf("pywinrm certificate logon: %+v", r)
	}
	if l := srv.Logons(); len(l) == 0 || l[0] != "certificate:"+pyUser {
		t.Fatalf("logons %v", l)
	}
}
