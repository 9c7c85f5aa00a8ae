package readme_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/segkcd/segkcd/internal/testinfra/readme"
)

// A test decodes the JSON a README shows for its program.
func ExampleDecodeJSON() {
	dir, _ := os.MkdirTemp("", "readme")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "README.md")
	os.WriteFile(path, []byte("## tool\n\n```json\n{\"listen\": \":443\"}\n```\n"), 0o600)
	var c struct {
		Listen string `json:"listen"`
	}
	fmt.Println(readme.DecodeJSON(path, "## tool", &c), c.Listen)
	var strict struct{}
	fmt.Println(readme.DecodeJSON(path, "## tool", &strict))
	// Output:
	// <nil> :443
	// json: unknown field "listen"
}
