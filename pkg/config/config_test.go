package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
)

type settings struct {
	addr    string
	n       int
	on      bool
	wait    time.Duration
	brokers []string
}

func load(t *testing.T, env map[string]string, args ...string) (settings, error) {
	t.Helper()
	var s settings
	l := config.NewLoader("test", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	l.String(&s.addr, "listen-addr", ":8080", "where to listen")
	l.Int(&s.n, "max-items", 10, "how many")
	l.Bool(&s.on, "enabled", false, "switch")
	l.Duration(&s.wait, "wait", time.Second, "how long")
	l.StringList(&s.brokers, "kafka-brokers", []string{"a:1"}, "brokers")
	return s, l.Parse(args)
}

func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		desc string
		env  map[string]string
		args []string
		want settings
	}{
		{"defaults", nil, nil, settings{":8080", 10, false, time.Second, []string{"a:1"}}},
		{"environment overrides defaults",
			map[string]string{"SLUICE_LISTEN_ADDR": ":9", "SLUICE_MAX_ITEMS": "3", "SLUICE_ENABLED": "true",
				"SLUICE_WAIT": "5m", "SLUICE_KAFKA_BROKERS": "x:1, y:2,"},
			nil, settings{":9", 3, true, 5 * time.Minute, []string{"x:1", "y:2"}}},
		{"flags override environment",
			map[string]string{"SLUICE_MAX_ITEMS": "3"},
			[]string{"-max-items", "4", "-enabled"}, settings{":8080", 4, true, time.Second, []string{"a:1"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := load(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got.addr != tc.want.addr || got.n != tc.want.n || got.on != tc.want.on || got.wait != tc.want.wait ||
				strings.Join(got.brokers, ",") != strings.Join(tc.want.brokers, ",") {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		desc string
		env  map[string]string
		args []string
		want string
	}{
		{"bad integer in env", map[string]string{"SLUICE_MAX_ITEMS": "ten"}, nil, `SLUICE_MAX_ITEMS="ten": not an integer`},
		{"bad duration in env", map[string]string{"SLUICE_WAIT": "5"}, nil, `SLUICE_WAIT="5": not a duration`},
		{"bad boolean in env", map[string]string{"SLUICE_ENABLED": "yes please"}, nil, `SLUICE_ENABLED="yes please"`},
		{"unknown flag", nil, []string{"-nope"}, "flag provided but not defined: -nope"},
		{"stray argument", nil, []string{"extra"}, "unexpected arguments"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := load(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	if _, err := load(t, nil, "-h"); !errors.Is(err, config.ErrHelp) {
		t.Fatalf("-h gave %v, want ErrHelp", err)
	}
}

func TestUsageListsEnvNames(t *testing.T) {
	l := config.NewLoader("svc", func(string) (string, bool) { return "", false })
	var s string
	l.String(&s, "ops-addr", ":8081", "ops listener")
	var b strings.Builder
	l.Usage(&b)
	if !strings.Contains(b.String(), "-ops-addr  (SLUICE_OPS_ADDR, default \":8081\")") {
		t.Fatalf("usage does not show the env name and default:\n%s", b.String())
	}
}

func TestVersionIsAFlagOnly(t *testing.T) {
	for _, tc := range []struct {
		desc string
		env  map[string]string
		args []string
		want error
	}{
		{"-version", nil, []string{"-version"}, config.ErrVersion},
		{"-version despite a bad setting in the environment", map[string]string{"SLUICE_MAX_ITEMS": "ten"}, []string{"-version"}, config.ErrVersion},
		{"-help despite a bad setting in the environment", map[string]string{"SLUICE_MAX_ITEMS": "ten"}, []string{"-help"}, config.ErrHelp},
		{"SLUICE_VERSION in the environment does nothing", map[string]string{"SLUICE_VERSION": "true"}, nil, nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := load(t, tc.env, tc.args...)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			if got := config.Answered(err); got != (tc.want != nil) {
				t.Fatalf("Answered(%v) = %v", err, got)
			}
		})
	}
}

func TestParseOrAnswer(t *testing.T) {
	newLoader := func() *config.Loader {
		l := config.NewLoader("sluice-x", func(string) (string, bool) { return "", false })
		var s string
		l.String(&s, "ops-addr", ":8081", "ops listener")
		return l
	}
	for _, tc := range []struct {
		desc string
		args []string
		want error
		out  string
	}{
		{"-version prints the build line", []string{"-version"}, config.ErrVersion, "sluice-x dev ("},
		{"-help lists the settings and both questions", []string{"-help"}, config.ErrHelp, "-ops-addr  (SLUICE_OPS_ADDR"},
		{"-help mentions -version", []string{"-h"}, config.ErrHelp, "  -version\n"},
		{"a setting prints nothing", []string{"-ops-addr", ":1"}, nil, ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var out strings.Builder
			err := newLoader().ParseOrAnswer(tc.args, &out)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			if tc.out == "" && out.Len() > 0 || !strings.Contains(out.String(), tc.out) {
				t.Fatalf("output %q, want it to contain %q", out.String(), tc.out)
			}
		})
	}
}

func TestVersionIsNotAKnob(t *testing.T) {
	l := config.NewLoader("svc", func(string) (string, bool) { return "", false })
	for _, k := range l.Knobs() {
		if k.Flag == "version" {
			t.Fatalf("version is listed as a setting: %+v", k)
		}
	}
}
