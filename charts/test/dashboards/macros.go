package dashboardtest

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// timeRange is what Grafana sends the plugin with a query: the dashboard's
// range and the panel's interval.
type timeRange struct {
	From, To time.Time
	Interval time.Duration
}

// expandVariables replaces ${name} and $name as Grafana's template service
// does before the plugin sees the SQL (the plugin's format function writes a
// single value as it is and several as 'a','b'). Grafana's own $__ variables
// are left for expandMacros.
func expandVariables(s string, vars map[string][]string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := strings.Trim(ref, "${}")
		if strings.HasPrefix(name, "__") {
			return ref
		}
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return ref
		}
		if len(v) == 1 {
			return v[0]
		}
		return "'" + strings.Join(v, "','") + "'"
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("undefined variables %v", missing)
	}
	return out, nil
}

var varRef = regexp.MustCompile(`\$\{\w+\}|\$\w+`)

// macro expands one grafana-clickhouse-datasource macro (pkg/macros in
// grafana/clickhouse-datasource, v4) exactly as the plugin does.
type macro func(r timeRange, args []string) (string, error)

func toDateTime(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
func toDate(t time.Time) string     { return fmt.Sprintf("toDate('%s')", t.Format("2006-01-02")) }

func oneArg(f func(r timeRange, col string) string) macro {
	return func(r timeRange, args []string) (string, error) {
		if len(args) != 1 {
			return "", fmt.Errorf("expected 1 argument, received %d", len(args))
		}
		return f(r, args[0]), nil
	}
}

// macros holds the plugin's macros that run on ClickHouse 18.16. The
// plugin's _ms variants (fromUnixTimestamp64Milli, DateTime64) and
// $__timeInterval (toStartOfInterval) are not here on purpose: 18.16 has
// neither function, so a dashboard using them fails this test.
var macros = map[string]macro{
	"fromTime": func(r timeRange, _ []string) (string, error) { return toDateTime(r.From), nil },
	"toTime":   func(r timeRange, _ []string) (string, error) { return toDateTime(r.To), nil },
	"timeFilter": oneArg(func(r timeRange, c string) string {
		return fmt.Sprintf("%s >= %s AND %s <= %s", c, toDateTime(r.From), c, toDateTime(r.To))
	}),
	"dateFilter": oneArg(func(r timeRange, c string) string {
		return fmt.Sprintf("%s >= %s AND %s <= %s", c, toDate(r.From), c, toDate(r.To))
	}),
	"interval_s": func(r timeRange, _ []string) (string, error) {
		return fmt.Sprintf("%d", int(math.Max(r.Interval.Seconds(), 1))), nil
	},
}

func init() {
	dt := func(r timeRange, args []string) (string, error) {
		if len(args) != 2 {
			return "", fmt.Errorf("expected 2 arguments, received %d", len(args))
		}
		return fmt.Sprintf("(%s >= %s AND %s <= %s) AND (%s >= %s AND %s <= %s)",
			args[0], toDate(r.From), args[0], toDate(r.To), args[1], toDateTime(r.From), args[1], toDateTime(r.To)), nil
	}
	macros["dateTimeFilter"], macros["dt"] = dt, dt
}

var macroName = regexp.MustCompile(`\$__(\w+)`)

// expandMacros replaces every $__name or $__name(args) as the plugin's
// backend (grafana/sqlds) does: arguments are split at top-level commas and
// trimmed. An unknown macro is an error, as it is in Grafana.
func expandMacros(sql string, r timeRange) (string, error) {
	var b strings.Builder
	for {
		loc := macroName.FindStringSubmatchIndex(sql)
		if loc == nil {
			b.WriteString(sql)
			return b.String(), nil
		}
		name := sql[loc[2]:loc[3]]
		m, ok := macros[name]
		if !ok {
			return "", fmt.Errorf("macro $__%s is not one the plugin expands on ClickHouse 18.16", name)
		}
		b.WriteString(sql[:loc[0]])
		rest := sql[loc[1]:]
		var args []string
		if strings.HasPrefix(rest, "(") {
			end, depth := -1, 0
			for i, c := range rest {
				if c == '(' {
					depth++
				} else if c == ')' {
					if depth--; depth == 0 {
						end = i
						break
					}
				}
			}
			if end < 0 {
				return "", fmt.Errorf("macro $__%s: unbalanced parentheses", name)
			}
			args = splitArgs(rest[1:end])
			rest = rest[end+1:]
		}
		out, err := m(r, args)
		if err != nil {
			return "", fmt.Errorf("macro $__%s: %w", name, err)
		}
		b.WriteString(out)
		sql = rest
	}
}

func splitArgs(s string) []string {
	var args []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				args = append(args, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if t := strings.TrimSpace(s[start:]); t != "" || len(args) > 0 {
		args = append(args, t)
	}
	return args
}
