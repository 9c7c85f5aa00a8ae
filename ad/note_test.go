package ad_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
)

// SwapNote is a compare-and-swap in AD: of eight connections swapping the
// same old note at once, exactly one wins and the rest get ErrConflict;
// ldbsearch (Samba's own view of the database) sees the winner's note.
func TestSwapNoteOneWinner(t *testing.T) {
	l, c, ctx := dial(t)
	const acct = "notes"
	must(t)(c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: acct, Password: "Notes-Passw0rd-1!"}))
	if n, err := c.ReadNote(ctx, acct); err != nil || n != "" {
		t.Fatalf("fresh note %q %v", n, err)
	}
	expect(t, segkcd.Created)(c.SwapNote(ctx, acct, "", "first"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := []string{}, 0
	for i := 0; i < 8; i++ {
		conn, err := l.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Add(1)
		go func(i int, conn *ad.Conn) {
			defer wg.Done()
			next := string(rune('a' + i))
			_, err := conn.SwapNote(ctx, acct, "first", next)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, next)
			case errors.Is(err, ad.ErrConflict):
				conflicts++
			default:
				t.Errorf("swap %d: %v", i, err)
			}
		}(i, conn)
	}
	wg.Wait()
	if len(wins) != 1 || conflicts != 7 {
		t.Fatalf("wins %v, conflicts %d", wins, conflicts)
	}
	if got := ldbAttr(t, l, acct, ad.NoteAttribute); len(got) != 1 || got[0] != wins[0] {
		t.Fatalf("ldbsearch sees %v, want %s", got, wins[0])
	}
	// A swap from a stale value fails; from the current one it works, and "" removes.
	if _, err := c.SwapNote(ctx, acct, "first", "late"); !errors.Is(err, ad.ErrConflict) {
		t.Fatalf("stale swap: %v", err)
	}
	expect(t, segkcd.Removed)(c.SwapNote(ctx, acct, wins[0], ""))
}
