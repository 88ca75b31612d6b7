package testenv

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FreeAddr is a 127.0.0.1 address nothing listens on right now, for a
// service's API or ops listener.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Probe GETs http://addr+path and returns the status code and body; code 0
// when nothing answers.
func Probe(addr, path string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// WaitProbe polls addr+path until the answer has status code and its body
// contains want, failing the test after within.
func WaitProbe(t testing.TB, addr, path string, code int, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, body := Probe(addr, path)
		if got == code && strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%s answered %d %s for %v; want %d containing %q", addr, path, got, body, within, code, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Service is a service's Run in a goroutine of the test.
type Service struct {
	cancel  context.CancelFunc
	done    chan error
	budget  time.Duration
	stopped bool
}

// StartService runs run until Stop or the end of the test; budget is how
// long it may take to return once cancelled (Common.ShutdownBudget).
func StartService(t testing.TB, run func(context.Context) error, budget time.Duration) *Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cancel: cancel, done: make(chan error, 1), budget: budget}
	go func() { s.done <- run(ctx) }()
	t.Cleanup(func() {
		if !s.stopped {
			s.stopped = true
			cancel()
			<-s.done
		}
	})
	return s
}

// Stopped reports whether Stop has run (or the test's cleanup has).
func (s *Service) Stopped() bool { return s.stopped }

// FailIfExited fails the test if Run has returned on its own.
func (s *Service) FailIfExited(t testing.TB) {
	t.Helper()
	select {
	case err := <-s.done:
		s.stopped = true
		t.Fatalf("Run returned on its own: %v", err)
	default:
	}
}

// Stop cancels Run and requires it to return nil within its budget. Once
// stopped, Stop does nothing.
func (s *Service) Stop(t testing.TB) {
	t.Helper()
	if s.stopped {
		return
	}
	s.stopped = true
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(s.budget):
		t.Fatalf("Run did not return within %v of cancel", s.budget)
	}
}
