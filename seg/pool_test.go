package seg_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/segkcd/segkcd/seg"
)

// connUsers is a server that records which users each connection carried.
type connUsers struct {
	mu    sync.Mutex
	conns map[net.Conn]map[string]bool
	open  int
}

func newConnUsers(t *testing.T) (*httptest.Server, *connUsers) {
	cu := &connUsers{conns: map[net.Conn]map[string]bool{}}
	type key struct{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.Context().Value(key{}).(net.Conn)
		cu.mu.Lock()
		cu.conns[c][r.Header.Get("X-User")] = true
		cu.mu.Unlock()
		io.WriteString(w, "ok")
	}))
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		cu.mu.Lock()
		cu.conns[c] = map[string]bool{}
		cu.mu.Unlock()
		return context.WithValue(ctx, key{}, c)
	}
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		cu.mu.Lock()
		defer cu.mu.Unlock()
		switch s {
		case http.StateNew:
			cu.open++
		case http.StateClosed, http.StateHijacked:
			cu.open--
		}
	}
	srv.EnableHTTP2 = true // offered; the pools must still speak HTTP/1.1, one user a connection
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, cu
}

func TestUserPoolsKeepUsersApart(t *testing.T) {
	srv, cu := newConnUsers(t)
	pools := &seg.UserPools{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		for _, user := range []string{"alice", "bob", "carol"} {
			wg.Add(1)
			go func(user string) {
				defer wg.Done()
				for j := 0; j < 20; j++ {
					req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
					req.Header.Set("X-User", user)
					resp, err := pools.ForUser(user).RoundTrip(req)
					if err != nil {
						t.Error(err)
						return
					}
					if resp.ProtoMajor != 1 {
						t.Errorf("upstream spoke %s", resp.Proto)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}(user)
		}
	}
	wg.Wait()
	cu.mu.Lock()
	for c, users := range cu.conns {
		if len(users) > 1 {
			t.Errorf("connection %v carried %v", c.RemoteAddr(), users)
		}
	}
	cu.mu.Unlock()
	if n := pools.Users(); n != 3 {
		t.Errorf("%d pools", n)
	}
}

func TestUserPoolsBounded(t *testing.T) {
	srv, cu := newConnUsers(t)
	pools := &seg.UserPools{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, MaxUsers: 2, IdleTimeout: 200 * time.Millisecond}
	get := func(user string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("X-User", user)
		resp, err := pools.ForUser(user).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, u := range []string{"a", "b", "c", "d"} {
		get(u)
	}
	if n := pools.Users(); n != 2 {
		t.Errorf("%d pools with MaxUsers 2", n)
	}
	// The pools of users who left are closed with their connections.
	time.Sleep(300 * time.Millisecond)
	get("e") // the sweep runs on use
	deadline := time.Now().Add(2 * time.Second)
	for {
		cu.mu.Lock()
		open := cu.open
		cu.mu.Unlock()
		if open <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections still open", open)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := pools.Users(); n != 1 {
		t.Errorf("%d pools after the idle timeout", n)
	}
}
