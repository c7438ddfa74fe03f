package browser

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestFleetPageInChromium starts `meshroot serve --dev`, brings three
// clusters into different states with the real agent writing to folders
// (no Kubernetes) — "dev" healthy (the banner's own command), "edge"
// expiring in five days, "lab" registered and never seen — prepares a new
// root so that a rotation is in progress with activate blocked, then loads
// the fleet page in headless Chromium with JavaScript disabled at a laptop's
// 1366x768 and checks what it renders through the DevTools protocol. It
// saves screenshots, and checks that nothing is fetched from elsewhere and
// that a page reached through a non-loopback host name is refused.
func TestFleetPageInChromium(t *testing.T) {
	chromium := requireChromium(t)
	dir := shortDir(t)
	s := startDev(t, dir)
	sock := "--socket=" + s.socket

	// dev: exactly the banner's command, once.
	args := append([]string{}, s.agentArgs...)
	args[len(args)-1] = filepath.Join(dir, "dev-cacerts")
	cliOK(t, append(args, "--once")...)
	// edge: a five-day intermediate (the policy's minimum is a day).
	cliOK(t, "cluster", "add", "edge", sock)
	tok := strings.TrimSpace(cliOK(t, "token", "create", "--cluster", "edge", sock))
	cliOK(t, "agent", "--once", "--server", s.issuer, "--server-ca", s.serverCA, "--cluster", "edge",
		"--join-token", tok, "--ttl", "120h", "--out", filepath.Join(dir, "edge-cacerts"))
	// lab: registered, never heard from.
	cliOK(t, "cluster", "add", "lab", sock)
	// A rotation: the new root is prepared; no cluster has applied the
	// bundle that holds it, so activate is blocked.
	cliOK(t, "root", "prepare", sock)
	if _, err := os.Stat(filepath.Join(dir, "dev-cacerts", "ca-cert.pem")); err != nil {
		t.Fatalf("the banner's agent command wrote no cacerts: %v", err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1366, 768),
		// rebind.test resolves to 127.0.0.1, as a DNS rebinding attack would make it.
		chromedp.Flag("host-resolver-rules", "MAP rebind.test 127.0.0.1"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	var mu sync.Mutex
	var requested []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requested = append(requested, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	call(t, ctx, network.Enable, network.EnableParams{})
	call(t, ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}) // usable without JavaScript
	run(t, ctx, chromedp.Navigate(s.fleetURL))
	run(t, ctx, chromedp.WaitVisible(chromedp.ID("expiry-calendar")))
	title := run(t, ctx, chromedp.Title())
	count := func(sel string) int {
		return len(run(t, ctx, chromedp.Nodes(chromedp.CSSAll(sel), chromedp.AtLeast(0))))
	}
	text := func(sel string) string { return strings.TrimSpace(run(t, ctx, chromedp.Text(chromedp.CSS(sel)))) }
	rows := run(t, ctx, chromedp.Nodes(chromedp.CSSAll("tr.cluster")))
	phase, next, chain := text("#rotation-phase"), text("#rotation-next"), text("#audit-chain")
	blockers := count("#rotation-blockers li.blocker")
	calRows := count("#expiry-calendar g.row")
	crit7 := count(`#expiry-calendar g.intermediate rect.zone.crit[data-days="7"]`)
	warn30 := count(`#expiry-calendar g.intermediate rect.zone.warn[data-days="30"]`)
	warn180 := count(`#expiry-calendar g.root rect.zone.warn[data-days="180"]`)
	renew, today := count("#expiry-calendar path.renew"), count("#expiry-calendar line.today")
	scrollW := run(t, ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	viewPNG := run(t, ctx, chromedp.CaptureScreenshot())
	fullPNG := run(t, ctx, chromedp.FullScreenshot(100))
	if !strings.Contains(title, "meshroot fleet") {
		t.Errorf("title %q", title)
	}

	// Cluster rows and their states.
	want := map[string]string{"dev": "healthy", "edge": "expiring (< 7 days)", "lab": "not seen"}
	if len(rows) != len(want) {
		t.Fatalf("%d cluster rows, want %d", len(rows), len(want))
	}
	for _, r := range rows {
		name := r.AttributeValue("data-cluster")
		shown := text(`tr[data-cluster="` + name + `"] td.state`)
		if got := r.AttributeValue("data-state"); got != want[name] || !strings.Contains(shown, want[name]) {
			t.Errorf("cluster %s: state %q, shown %q; want %q", name, got, shown, want[name])
		}
	}
	for sel, wantText := range map[string]string{
		`tr[data-cluster="edge"] td.daysleft`:   "4",
		`tr[data-cluster="lab"] td.contact`:     "never",
		`tr[data-cluster="lab"] td.istiod`:      "unknown",
		`tr[data-cluster="dev"] td.quarantine`:  "no",
		`tr[data-cluster="dev"] td.istiod`:      "unknown",
		`tr[data-cluster="edge"] td.quarantine`: "no",
	} {
		if got := text(sel); got != wantText {
			t.Errorf("%s: %q, want %q", sel, got, wantText)
		}
	}

	// The rotation phase and its blockers, in the gate's words.
	if !strings.Contains(phase, "new root prepared") || !strings.Contains(next, "meshroot root activate") {
		t.Errorf("rotation: phase %q, next %q", phase, next)
	}
	if blockers != 3 {
		t.Errorf("%d blockers of activate, want one per cluster (3)", blockers)
	}
	blockText := text("#rotation-blockers")
	for _, c := range []string{"dev", "edge", "lab"} {
		if !strings.Contains(blockText, c+": has applied trust bundle") {
			t.Errorf("blockers lack %s's gate: %q", c, blockText)
		}
	}

	// The calendar: two roots and two intermediates, with the thresholds.
	if calRows != 4 {
		t.Errorf("%d calendar rows, want 4 (2 roots, 2 intermediates)", calRows)
	}
	// edge's five-day life is all in its 7-day zone: it has no 30-day zone.
	if crit7 != 2 || warn30 != 1 || warn180 != 2 {
		t.Errorf("threshold zones: %d at 7 days, %d at 30 days (intermediates), %d at 180 days (roots); want 2, 1, 2", crit7, warn30, warn180)
	}
	if renew < 2 || today != 1 {
		t.Errorf("%d planned renewal markers, %d today lines", renew, today)
	}
	if !strings.Contains(chain, "hash chain verified") {
		t.Errorf("audit chain: %q", chain)
	}
	if scrollW > 1366 {
		t.Errorf("the page is %d px wide: it scrolls sideways on a 1366 px laptop screen", scrollW)
	}

	// Nothing fetched from anywhere but the server.
	origin := strings.TrimSuffix(s.fleetURL, "/fleet")
	mu.Lock()
	for _, u := range requested {
		if !strings.HasPrefix(u, origin+"/") {
			t.Errorf("the page fetched %s", u)
		}
	}
	mu.Unlock()

	out := outDir(t)
	for name, png := range map[string][]byte{"fleet-page-1366x768.png": viewPNG, "fleet-page-full.png": fullPNG} {
		if len(png) < 1000 || string(png[1:4]) != "PNG" {
			t.Errorf("%s: not a PNG (%d bytes)", name, len(png))
		}
		if err := os.WriteFile(filepath.Join(out, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", out)

	// Reached through another host name (DNS rebinding), the page refuses.
	rebind := strings.Replace(s.fleetURL, "127.0.0.1", "rebind.test", 1)
	run(t, ctx, chromedp.Navigate(rebind))
	body := text("body")
	if !strings.Contains(body, "only to a loopback host name") || strings.Contains(body, "edge") {
		t.Errorf("%s answered: %q", rebind, body)
	}
}

// run runs one chromedp action and returns its value, failing the test on
// an error.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// call sends one DevTools protocol command.
func call[P, R any](t *testing.T, ctx context.Context, cmd cdp.Command[P, R], params P) R {
	t.Helper()
	v, err := chromedp.Call(ctx, cmd, params)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFleetPageRefusedOffLoopback: without admin mTLS, serve refuses to
// put the page on a listener other hosts reach, and says how to serve it
// over admin mTLS.
func TestFleetPageRefusedOffLoopback(t *testing.T) {
	dir := shortDir(t)
	_, errOut, code := cli(t, "serve", "--fleet-page", "--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "a.sock"),
		"--insecure-plaintext-key", "--listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0", "--bundle-endpoint-listen", "off")
	if code != 2 || !strings.Contains(errOut, "remote access needs admin mTLS") || !strings.Contains(errOut, "fleetPageListen/--fleet-page-listen") {
		t.Fatalf("serve --fleet-page --http-listen 0.0.0.0:0: exit %d\n%s", code, errOut)
	}
}
