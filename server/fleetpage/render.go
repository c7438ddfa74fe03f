package fleetpage

import (
	"fmt"
	"html/template"
	"time"
)

// funcs are the template's helpers.
var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02")
	},
	"short": short,
	"cut": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
	"px": func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"days": func(p *int) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	},
	"yesno": func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	},
	"plus": func(a, b int) int { return a + b },
	"count": func(cs []Cluster, level string) int {
		n := 0
		for _, c := range cs {
			if c.Level == level {
				n++
			}
		}
		return n
	},
}
