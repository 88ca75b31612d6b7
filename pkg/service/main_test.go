package service_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/service"
)

// The test binary re-executes itself with SERVICE_MAIN_MODE set to run
// service.Main as a real process would.
func init() {
	mode := os.Getenv("SERVICE_MAIN_MODE")
	if mode == "" {
		return
	}
	load := func(args []string, env config.LookupEnv) (testConfig, error) {
		switch mode {
		case "bad-config":
			return "", errors.New("SLUICE_X: nonsense")
		case "version", "help":
			// SLUICE_VERSION is set as a container might set it: only the
			// flag may make the service print its version.
			env := func(k string) (string, bool) { return "true", k == "SLUICE_VERSION" }
			return service.Load("test", []string{"-" + mode}, env, func(*testConfig, *config.Loader) {})
		}
		return testConfig(mode), nil
	}
	run := func(ctx context.Context, mode testConfig) error {
		os.Stdout.WriteString("running\n")
		switch mode {
		case "fail":
			return errors.New("broker unreachable")
		case "wedged":
			// A stage stuck in a call that ignores its context.
			select {}
		}
		<-ctx.Done()
		os.Stdout.WriteString("finished in-flight work\n")
		return nil
	}
	service.Main("test", load, run)
	os.Exit(0)
}

// testConfig is the mode the child process runs in; it allows half a second
// from SIGTERM to exit.
type testConfig string

func (testConfig) ShutdownBudget() time.Duration { return 500 * time.Millisecond }

func (testConfig) Validate() error { return nil }

func TestMainExitCodes(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		mode     string
		sigterm  bool
		wantCode int
		wantOut  string
	}{
		{"SIGTERM stops cleanly after the work finished", "serve", true, 0, "finished in-flight work"},
		{"bad configuration exits 2 naming it", "bad-config", false, 2, "SLUICE_X: nonsense"},
		{"-version prints the build and exits 0", "version", false, 0, "sluice-test dev ("},
		{"-help lists the settings and exits 0", "help", false, 0, "-version\n"},
		{"a failing run exits 1 with the reason", "fail", false, 1, "broker unreachable"},
		{"SIGTERM ends a wedged process within its budget", "wedged", true, 1, "still running 500ms after the stop signal"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "SERVICE_MAIN_MODE="+tc.mode)
			var out strings.Builder
			cmd.Stderr = &out
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			if tc.sigterm {
				if !sc.Scan() || sc.Text() != "running" {
					t.Fatalf("process did not start running: %q", sc.Text())
				}
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			for sc.Scan() {
				out.WriteString(sc.Text() + "\n")
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatal("process did not exit")
			}
			if code := cmd.ProcessState.ExitCode(); code != tc.wantCode {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tc.wantCode, out.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("output %q does not contain %q", out.String(), tc.wantOut)
			}
		})
	}
}
