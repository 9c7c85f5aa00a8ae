package main

import (
	"testing"

	"github.com/segkcd/segkcd/internal/testinfra/readme"
)

// The README's gateway.json is a configuration the program reads: every
// field it shows exists (the roll section's too), so the documentation
// cannot drift from the code unnoticed.
func TestREADMEConfig(t *testing.T) {
	var c config
	if err := readme.DecodeJSON("../../README.md", "`examples/gateway` runs the handler from a JSON file", &c); err != nil {
		t.Fatal(err)
	}
	if c.Roll == nil || c.Roll.ASA == "" || c.Roll.BindKeytab == "" || len(c.Roll.Servers) != 2 || c.Admin == nil || c.Policy == nil {
		t.Fatalf("README's gateway.json lost a section: %+v", c)
	}
}
