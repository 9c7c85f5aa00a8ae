package ad_test

import (
	"os"
	"testing"

	"github.com/segkcd/segkcd/internal/lab"
)

// theLab is one Samba AD DC for this test binary, started on first use.
var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }
