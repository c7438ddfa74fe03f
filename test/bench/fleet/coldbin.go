package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// coldCopy copies the binary bin into dir as name and drops the copy from
// the page cache, as make bench-idle does (dd iflag=nocache), so that a
// process started from it maps only what it touches, as on a node that
// just pulled the image. A binary just built is cached in large folios
// and mapped nearly whole: the server's and the lean agent's idle RSS
// would then measure the page cache, not the process (docs/performance.md,
// "Idle memory"). Each process gets its own copy.
func coldCopy(bin, dir, name string) (string, error) {
	src, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dst := filepath.Join(dir, name)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Sync(); err != nil { // dirty pages cannot be dropped
		out.Close()
		return "", err
	}
	if err := unix.Fadvise(int(out.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		out.Close()
		return "", fmt.Errorf("dropping %s from the page cache: %w", dst, err)
	}
	return dst, out.Close()
}
