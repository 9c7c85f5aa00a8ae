package ntlm_test

import (
	"fmt"

	"github.com/segkcd/segkcd/internal/ntlm"
)

// A client logs on to a server and they exchange sealed messages. Over
// HTTP the three messages ride in Authorization / WWW-Authenticate
// headers on one connection; winrs does that.
func Example() {
	srv := &ntlm.Server{DomainName: "CORP", ComputerName: "CAS1",
		NTHash: func(user, domain string) ([]byte, bool) {
			return ntlm.NTHash("Adm1n-pw!"), user == "admin"
		}}
	user, domain := ntlm.SplitUser(`CORP\admin`)
	cl := &ntlm.Client{User: user, Domain: domain, Password: "Adm1n-pw!", TargetName: "HTTP/cas1.corp.example"}

	pending, challenge, _ := srv.Challenge(cl.Negotiate())
	auth, clientSession, err := cl.Authenticate(challenge)
	if err != nil {
		panic(err)
	}
	id, serverSession, err := pending.Accept(auth)
	if err != nil {
		panic(err)
	}
	fmt.Println("logged on:", id.Domain+`\`+id.User)

	sealed, sig := clientSession.Seal([]byte("<s:Envelope/>"))
	plain, err := serverSession.Unseal(sealed, sig)
	fmt.Println(string(plain), err)
	// Output:
	// logged on: CORP\admin
	// <s:Envelope/> <nil>
}
