# make demo: provision AD for KCD on a local Samba AD lab and prove the chain with our own S4U.
# make test: every test, against a real Samba AD DC that the tests start themselves.
SHELL := /bin/bash
GO ?= go
# The oldest Go that go.mod promises; `make compat` builds and vets with it.
GO_MIN ?= go1.26.0
DEMO_LAB ?= .lab/demo

.PHONY: demo demo-clean test deps check compat fuzz bench soak storm

deps:
	scripts/lab deps
	$(GO) mod download

demo: deps
	scripts/lab run -dir $(DEMO_LAB) -- scripts/demo

demo-clean:
	rm -rf $(DEMO_LAB)

check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# Builds and vets with the oldest Go we declare (fetched through the module proxy).
compat:
	GOTOOLCHAIN=$(GO_MIN) $(GO) vet ./...

# One Samba DC for the whole run: labrun -share starts it, and every test
# binary attaches to it (internal/testinfra/lab.Shared) instead of
# provisioning its own.
test: deps check compat
	scripts/lab run -q -share -- $(GO) test -race -count=1 ./...

# Longer fuzzing than the seed corpus run in `make test`.
fuzz:
	$(GO) test ./ad -run '^$$' -fuzz FuzzParseDiagnostic -fuzztime 60s
	$(GO) test ./ad -run '^$$' -fuzz FuzzParseSecurityDescriptor -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzKDCReply -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzNegotiate -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzUnseal -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzKDCReplyPlain -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzASRep -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzPreauthEData -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzCCache -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzKrb5Conf -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzKeytab -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzUnwrap -fuzztime 60s
	$(GO) test ./kerberos -run '^$$' -fuzz FuzzPAC -fuzztime 60s
	$(GO) test ./winrs/winrstest -run '^$$' -fuzz FuzzQuote -fuzztime 60s
	$(GO) test ./winrs/winrstest -run '^$$' -fuzz FuzzCLIXML -fuzztime 60s
	$(GO) test ./internal/wsman -run '^$$' -fuzz FuzzUnseal -fuzztime 60s
	$(GO) test ./internal/ntlm -run '^$$' -fuzz FuzzChallenge -fuzztime 60s
	$(GO) test ./internal/ntlm -run '^$$' -fuzz FuzzAuthenticate -fuzztime 60s
	$(GO) test ./internal/ntlm -run '^$$' -fuzz FuzzNegotiate -fuzztime 60s
	$(GO) test ./internal/proxyproto -run '^$$' -fuzz FuzzRead -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzParseParams -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzParseUPNs -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzParseSIDExtension -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzSIDFromURI -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzPrincipal -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzParsePolicy -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzRewriteAutodiscover -fuzztime 60s
	$(GO) test ./seg -run '^$$' -fuzz FuzzParseAutodiscoverJSON -fuzztime 60s
	$(GO) test ./deploy -run '^$$' -fuzz FuzzParseJournal -fuzztime 60s

bench: deps
	bench/run

# The gateway for hours, compressed (not in `make test`): 2,000 phones for 20
# minutes with a KDC and an Exchange stand-in restart (bench/results/soak.md).
soak: deps
	$(GO) run ./bench/gateway soak

# Ticket refresh storm: 10,000 warm users through three 5-minute ticket
# lifetimes (bench/results/storm.md).
storm: deps
	$(GO) run ./bench/gateway storm
