package main

import (
	"io"
	"os"
	"os/exec"
	"syscall"
)

// startChild starts this bench's own binary with args and env added to
// its environment, as a child that dies with it (Pdeathsig), its stderr
// on the bench's: the stream fan-out's child and the agent shards. It
// returns the child's stdin and stdout.
func startChild(env []string, args ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, in, out, nil
}
