package testenv

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proxy forwards connections from a listener on 127.0.0.1 to a target and
// can cut them: SetCut(true) closes every forwarded connection and closes
// new ones as soon as they are accepted, as a stopped server's host would
// refuse them; SetCut(false) forwards again. A test cuts its own service
// off ClickHouse (or off the Kafka bootstrap) this way without stopping the
// servers other test packages are using.
//
// For Kafka only the bootstrap goes through a proxy: the broker then names
// its own address, which clients dial directly. A cut proxy therefore
// makes Kafka unreachable for a process starting up, not for one running.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{} // both ends of every forwarded connection
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to target, forwarding (not cut), stopped when the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

// track registers c unless the proxy is cut.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.untrack(client)
		return
	}
	if !p.track(server) { // cut while dialling
		server.Close()
		p.untrack(client)
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, server); done <- struct{}{} }()
	<-done
	p.untrack(client, server) // ends the other copy too
	<-done
}

// SetCut cuts (true) or restores (false) the connection to the target.
func (p *Proxy) SetCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.SetCut(true)
	p.wg.Wait()
}

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
