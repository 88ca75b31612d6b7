// Package config loads a service's settings from command-line flags and
// SLUICE_* environment variables. Every knob is one flag; its environment
// variable is the flag name upper-cased with dashes turned to underscores and
// SLUICE_ in front (-kafka-brokers ↔ SLUICE_KAFKA_BROKERS). A flag given on
// the command line wins over the environment, which wins over the default.
//
// Two flags answer a question instead of setting anything, and have no
// environment variable: -help lists every setting, and -version prints the
// build (package buildinfo). A SLUICE_VERSION set in a container must not
// turn a service into a program that prints a line and exits.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/buildinfo"
)

// EnvPrefix starts every environment variable Sluice reads.
const EnvPrefix = "SLUICE_"

// ErrHelp is returned by Parse when -h or -help was given; the caller prints
// Usage and exits 0.
var ErrHelp = flag.ErrHelp

// ErrVersion is returned by Parse when -version was given; the caller prints
// buildinfo.Line and exits 0.
var ErrVersion = errors.New("version requested")

// Answered tells whether err is ErrHelp or ErrVersion: the command line
// asked a question, ParseOrAnswer answered it, and the program exits 0.
func Answered(err error) bool { return errors.Is(err, ErrHelp) || errors.Is(err, ErrVersion) }

// versionFlag is the one flag Parse does not read from the environment.
const versionFlag = "version"

// LookupEnv is os.LookupEnv's signature; tests pass a map-backed one.
type LookupEnv func(key string) (string, bool)

// Loader binds flags and environment variables to fields of a Config.
type Loader struct {
	fs      *flag.FlagSet
	env     LookupEnv
	knobs   []Knob
	version bool
}

// Knob describes one setting for help output and documentation.
type Knob struct {
	Flag    string
	Env     string
	Default string
	Usage   string
}

// NewLoader returns a Loader for the program name that reads env.
func NewLoader(name string, env LookupEnv) *Loader {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l := &Loader{fs: fs, env: env}
	// Not a knob: Parse never sets it from SLUICE_VERSION.
	fs.BoolVar(&l.version, versionFlag, false, "print the version and exit")
	return l
}

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Var binds any flag.Value; its current value is the default.
func (l *Loader) Var(v flag.Value, name, usage string) {
	l.fs.Var(v, name, usage)
	l.knobs = append(l.knobs, Knob{Flag: name, Env: EnvName(name), Default: v.String(), Usage: usage})
}

// String binds a string setting.
func (l *Loader) String(p *string, name, def, usage string) {
	*p = def
	l.Var((*stringValue)(p), name, usage)
}

// Int binds an integer setting.
func (l *Loader) Int(p *int, name string, def int, usage string) {
	*p = def
	l.Var((*intValue)(p), name, usage)
}

// Bool binds a boolean setting (true/false/1/0).
func (l *Loader) Bool(p *bool, name string, def bool, usage string) {
	*p = def
	l.Var((*boolValue)(p), name, usage)
}

// Duration binds a duration setting written the Go way (250ms, 5s, 24h).
func (l *Loader) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	l.Var((*durationValue)(p), name, usage)
}

// StringList binds a comma-separated list; empty items are dropped.
func (l *Loader) StringList(p *[]string, name string, def []string, usage string) {
	*p = append([]string(nil), def...)
	l.Var((*listValue)(p), name, usage)
}

// Parse applies the environment, then args. Errors name the flag or the
// environment variable and the value that was refused. -help and -version
// return ErrHelp and ErrVersion, whatever else is set: asking what a binary
// is never depends on its environment being right.
func (l *Loader) Parse(args []string) error {
	var errs []error
	l.fs.VisitAll(func(f *flag.Flag) {
		if f.Name == versionFlag {
			return
		}
		key := EnvName(f.Name)
		if v, ok := l.env(key); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", key, v, err))
			}
		}
	})
	if err := l.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ErrHelp
		}
		return errors.Join(append(errs, err)...)
	}
	if l.version {
		return ErrVersion
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if l.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", l.fs.Args())
	}
	return nil
}

// ParseOrAnswer is Parse for a main function: on -help it writes Usage to
// out, on -version the line "<program> <version> (<revision>)", and it
// returns the error Parse gave; Answered(err) means exit 0.
func (l *Loader) ParseOrAnswer(args []string, out io.Writer) error {
	err := l.Parse(args)
	switch {
	case errors.Is(err, ErrHelp):
		l.Usage(out)
	case errors.Is(err, ErrVersion):
		fmt.Fprintln(out, buildinfo.Line(l.fs.Name()))
	}
	return err
}

// Knobs lists every bound setting, sorted by flag name.
func (l *Loader) Knobs() []Knob {
	k := append([]Knob(nil), l.knobs...)
	sort.Slice(k, func(i, j int) bool { return k[i].Flag < k[j].Flag })
	return k
}

// Usage writes every setting with its environment variable and default.
func (l *Loader) Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage of %s (flags override SLUICE_* environment variables):\n", l.fs.Name())
	for _, k := range l.Knobs() {
		fmt.Fprintf(w, "  -%s  (%s, default %q)\n      %s\n", k.Flag, k.Env, k.Default, k.Usage)
	}
	fmt.Fprintf(w, "  -help\n      list these settings and exit\n  -version\n      print the version and exit\n")
}

type stringValue string

func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }
func (s *stringValue) String() string     { return string(*s) }

type intValue int

func (i *intValue) Set(v string) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("not an integer")
	}
	*i = intValue(n)
	return nil
}
func (i *intValue) String() string { return strconv.Itoa(int(*i)) }

type boolValue bool

func (b *boolValue) Set(v string) error {
	x, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("not a boolean (use true or false)")
	}
	*b = boolValue(x)
	return nil
}
func (b *boolValue) String() string   { return strconv.FormatBool(bool(*b)) }
func (b *boolValue) IsBoolFlag() bool { return true }

type durationValue time.Duration

func (d *durationValue) Set(v string) error {
	x, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("not a duration (write it like 500ms, 30s or 24h)")
	}
	*d = durationValue(x)
	return nil
}
func (d *durationValue) String() string { return time.Duration(*d).String() }

type listValue []string

func (l *listValue) Set(v string) error {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	*l = out
	return nil
}
func (l *listValue) String() string { return strings.Join(*l, ",") }
