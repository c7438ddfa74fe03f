package kubeenv

import (
	"os"
	"os/exec"
	"syscall"
)

// reaper is a small shell process that stops a cluster's etcd and
// apiserver and removes its folder should the test process die without
// doing it (a panic, go test's -timeout, a kill): it reads a pipe only
// this process holds, and on end of file without the word "done" kills
// every process whose command line names the cluster's folder. Without
// it, a crashed test binary left its apiservers running, and with
// clusters kept idle between tests (Main) there are more of them to leave.
type reaper struct {
	w *os.File
}

// reapScript: $1 is the cluster's folder. The processes' command lines
// name files under it ("$1/etcd", "$1/apiserver"); the reaper's own
// names "$1" without the slash.
const reapScript = `if read -r word && [ "$word" = done ]; then exit 0; fi
for p in /proc/[0-9]*; do
	if grep -qsF -- "$1/" "$p/cmdline"; then kill -9 "${p#/proc/}" 2>/dev/null; fi
done
rm -rf -- "$1"`

func startReaper(dir string) (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("sh", "-c", reapScript, "kubeenv-reaper", dir)
	cmd.Stdin = r
	// Its own process group: a Ctrl-C to the test's group leaves it to
	// clean up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait() }()
	return &reaper{w: w}, nil
}

// done tells the reaper the cluster was stopped: it exits without
// looking.
func (r *reaper) done() {
	if r == nil || r.w == nil {
		return
	}
	_, _ = r.w.Write([]byte("done\n"))
	_ = r.w.Close()
	r.w = nil
}
