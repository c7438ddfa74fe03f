package fleetpage

import (
	"fmt"
	"time"
)

// Calendar is the expiry calendar: every root's and intermediate's
// lifetime on one time axis, with the planned renewal and the alert
// thresholds. The JSON carries the dates; the drawing fields are the
// server-rendered SVG's geometry.
type Calendar struct {
	From time.Time `json:"from"`
	// Pivot is where the scale changes (To when it does not).
	Pivot time.Time `json:"scale_changes_at"`
	To    time.Time `json:"to"`
	Items []CalItem `json:"items"`

	Width   int       `json:"-"`
	Height  int       `json:"-"`
	PlotX0  float64   `json:"-"`
	PlotX1  float64   `json:"-"`
	AxisY   int       `json:"-"`
	TodayX  float64   `json:"-"`
	Ticks   []calTick `json:"-"`
	Now     time.Time `json:"-"`
	BottomY int       `json:"-"`
	// HasBreak is set when the axis has a compressed part after BreakX.
	HasBreak bool    `json:"-"`
	BreakX   float64 `json:"-"`
	FarW     float64 `json:"-"`
	BandH    int     `json:"-"`
}

// CalItem is one certificate on the calendar.
type CalItem struct {
	// Kind is root or intermediate.
	Kind    string    `json:"kind"`
	Label   string    `json:"label"`
	Cluster string    `json:"cluster,omitempty"`
	RootID  string    `json:"root_id,omitempty"`
	Serial  string    `json:"serial,omitempty"`
	State   string    `json:"state,omitempty"`
	Start   time.Time `json:"not_before"`
	End     time.Time `json:"not_after"`
	// RenewAt is the planned renewal (intermediates: the agent's, at 2/3
	// of the lifetime) or rotation (roots, at 2/3 as well).
	RenewAt time.Time `json:"planned_renewal,omitzero"`
	// WarnAt and CritAt are when the expiry alerts start firing.
	WarnAt time.Time `json:"alert_warn_at"`
	CritAt time.Time `json:"alert_crit_at,omitzero"`
	Level  string    `json:"level"`

	Y, TextY           int     `json:"-"`
	BarX, BarW         float64 `json:"-"`
	RenewX             float64 `json:"-"`
	ShowRenew          bool    `json:"-"`
	WarnX, WarnW       float64 `json:"-"`
	ShowWarn           bool    `json:"-"`
	CritX, CritW       float64 `json:"-"`
	ShowCrit           bool    `json:"-"`
	WarnDays, CritDays int     `json:"-"`
	Clipped            bool    `json:"-"`
	EndX               float64 `json:"-"`
	EndText            string  `json:"-"`
}

type calTick struct {
	X     float64
	Label string
}

// Calendar geometry (SVG user units; the SVG scales to the page width).
const (
	calWidth  = 1200
	calLabelW = 200
	calRightW = 190
	calRowH   = 28
	calTop    = 34
	minAhead  = 120 * 24 * time.Hour
	maxAhead  = 3 * 365 * 24 * time.Hour
	behind    = 30 * 24 * time.Hour
)

// calendar lays out the expiry calendar of f at now. The axis runs from a
// month ago to a little past the last intermediate's NotAfter (at least
// four months, at most three years ahead) on the first three quarters of
// the width; when a root lives longer, the last quarter is a compressed
// scale out to the last root's NotAfter, after a marked break.
func calendar(f *Fleet, now time.Time) Calendar {
	c := Calendar{Width: calWidth, PlotX0: calLabelW, PlotX1: calWidth - calRightW, AxisY: calTop - 8, Now: now}
	for _, r := range f.Roots {
		c.Items = append(c.Items, CalItem{
			Kind: "root", Label: "root " + short(r.ID) + " (" + r.State + ")", RootID: r.ID, State: r.State,
			Start: r.NotBefore, End: r.NotAfter, RenewAt: r.RotateBy, WarnAt: r.NotAfter.Add(-RootWarn),
			WarnDays: days(RootWarn), Level: r.Level,
		})
	}
	pivot := now.Add(minAhead)
	for _, cl := range f.Clusters {
		if cl.IntermediateNotAfter.IsZero() {
			continue
		}
		start := cl.IntermediateNotBefore
		if start.IsZero() { // not known: drawn from the axis' start
			start = now.Add(-behind)
		}
		c.Items = append(c.Items, CalItem{
			Kind: "intermediate", Label: "cluster " + cl.Name, Cluster: cl.Name, RootID: cl.RootID, Serial: cl.IntermediateSerial,
			Start: start, End: cl.IntermediateNotAfter, RenewAt: cl.RenewAt,
			WarnAt: cl.IntermediateNotAfter.Add(-IntermediateWarn), CritAt: cl.IntermediateNotAfter.Add(-IntermediateCrit),
			WarnDays: days(IntermediateWarn), CritDays: days(IntermediateCrit), Level: cl.Level,
		})
		if e := cl.IntermediateNotAfter.Add(15 * 24 * time.Hour); e.After(pivot) {
			pivot = e
		}
	}
	if limit := now.Add(maxAhead); pivot.After(limit) {
		pivot = limit
	}
	end := pivot
	for _, it := range c.Items {
		if e := it.End.Add(15 * 24 * time.Hour); e.After(end) {
			end = e
		}
	}
	c.From, c.Pivot, c.To, c.BreakX = now.Add(-behind), pivot, end, c.PlotX1
	if end.Sub(pivot) > 60*24*time.Hour {
		c.HasBreak = true
		c.BreakX = c.PlotX0 + 0.75*(c.PlotX1-c.PlotX0)
	} else {
		c.Pivot = end
	}
	c.TodayX = c.x(now)
	c.Ticks = ticks(c)
	for i := range c.Items {
		c.place(&c.Items[i], calTop+i*calRowH)
	}
	c.BottomY = calTop + len(c.Items)*calRowH
	c.Height = c.BottomY + 18
	c.FarW, c.BandH = c.PlotX1-c.BreakX, c.BottomY-c.AxisY-4
	return c
}

// x maps t onto the plot, clamped to its edges: linear up to the pivot,
// and linear again (compressed) after the break.
func (c *Calendar) x(t time.Time) float64 {
	frac := func(t, a, b time.Time) float64 {
		return max(0, min(1, float64(t.Sub(a))/float64(b.Sub(a))))
	}
	if !t.After(c.Pivot) {
		return c.PlotX0 + frac(t, c.From, c.Pivot)*(c.BreakX-c.PlotX0)
	}
	return c.BreakX + frac(t, c.Pivot, c.To)*(c.PlotX1-c.BreakX)
}

// in reports whether t falls on the axis.
func (c *Calendar) in(t time.Time) bool { return !t.Before(c.From) && !t.After(c.To) }

func (c *Calendar) place(it *CalItem, y int) {
	it.Y, it.TextY = y, y+calRowH/2+4
	it.BarX = c.x(it.Start)
	it.EndX = c.x(it.End)
	it.BarW = max(it.EndX-it.BarX, 1)
	it.Clipped = it.End.After(c.To)
	if it.ShowRenew = !it.RenewAt.IsZero() && c.in(it.RenewAt); it.ShowRenew {
		it.RenewX = c.x(it.RenewAt)
	}
	// A zone starts at its threshold, or at NotBefore for a certificate
	// issued for less than the threshold (its alert fires from the start).
	later := func(a, b time.Time) time.Time {
		if a.After(b) {
			return a
		}
		return b
	}
	stop := it.End
	if !it.CritAt.IsZero() {
		stop = later(it.CritAt, it.Start)
		if it.ShowCrit = it.CritAt.Before(c.To); it.ShowCrit {
			it.CritX = c.x(stop)
			it.CritW = max(it.EndX-it.CritX, 1)
		}
	}
	if it.ShowWarn = it.WarnAt.Before(c.To) && later(it.WarnAt, it.Start).Before(stop); it.ShowWarn {
		it.WarnX = c.x(later(it.WarnAt, it.Start))
		it.WarnW = max(c.x(stop)-it.WarnX, 1)
	}
	left := daysLeft(it.End, c.Now)
	it.EndText = fmt.Sprintf("%s · %s", it.End.UTC().Format("2006-01-02"), dayWord(left))
}

func dayWord(n int) string {
	switch {
	case n < 0:
		return fmt.Sprintf("expired %d d ago", -n)
	case n == 1:
		return "1 day left"
	}
	return fmt.Sprintf("%d days left", n)
}

// ticks marks the first of each month (each quarter on long axes) up to
// the pivot, then the first of each year (fewer on very long axes).
func ticks(c Calendar) []calTick {
	step := 1
	if c.Pivot.Sub(c.From) > 500*24*time.Hour {
		step = 3
	}
	t := time.Date(c.From.Year(), c.From.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0)
	for (int(t.Month())-1)%step != 0 {
		t = t.AddDate(0, 1, 0)
	}
	var out []calTick
	for ; t.Before(c.Pivot); t = t.AddDate(0, step, 0) {
		label := t.Format("Jan")
		if t.Month() <= time.Month(step) {
			label = t.Format("Jan 2006")
		}
		out = append(out, calTick{X: c.x(t), Label: label})
	}
	if !c.HasBreak {
		return out
	}
	years := c.To.Year() - c.Pivot.Year()
	ystep := max(1, (years+5)/6)
	for y := c.Pivot.Year() + 1; y <= c.To.Year(); y += ystep {
		t := time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
		if x := c.x(t); t.Before(c.To) && x-c.BreakX > 24 {
			out = append(out, calTick{X: x, Label: fmt.Sprint(y)})
		}
	}
	return out
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
