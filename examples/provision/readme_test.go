package main

import (
	"testing"

	"github.com/segkcd/segkcd/internal/testinfra/readme"
)

// The README's provision.json is a configuration the program reads: every
// field it shows exists.
func TestREADMEConfig(t *testing.T) {
	var c config
	if err := readme.DecodeJSON("../../README.md", "### `examples/provision`", &c); err != nil {
		t.Fatal(err)
	}
	if c.LDAPURL == "" || c.ASA == "" || len(c.Servers) != 2 || c.WinRM.Address == "" {
		t.Fatalf("README's provision.json lost a field: %+v", c)
	}
}
