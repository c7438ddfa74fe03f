package pluginhost

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BinaryName is the plugin's executable.
const BinaryName = "meshroot-plugin"

// locate finds the plugin: configured when set, else next to the running
// executable, else in $PATH. The error names what, every place looked and
// what to do.
func locate(configured, what string) (string, error) {
	if configured != "" {
		if err := executable(configured); err != nil {
			return "", fmt.Errorf("%s runs in %s, and --plugin (keys.plugin) names %s: %v: install meshroot-plugin there, or point --plugin at it (make build puts it in bin/)", what, BinaryName, configured, err)
		}
		return configured, nil
	}
	var looked []string
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			self = real
		}
		next := filepath.Join(filepath.Dir(self), BinaryName)
		if executable(next) == nil {
			return next, nil
		}
		looked = append(looked, next)
	}
	if p, err := exec.LookPath(BinaryName); err == nil {
		return p, nil
	}
	looked = append(looked, "$PATH ("+os.Getenv("PATH")+")")
	return "", fmt.Errorf("%s runs in %s, which was not found (looked at %s): install meshroot-plugin next to meshroot (make build puts it in bin/), or name it with --plugin (keys.plugin in the config)", what, BinaryName, strings.Join(looked, " and in "))
}

// executable checks that path is a regular file someone may execute.
func executable(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	if info.Mode().Perm()&0o111 == 0 {
		return errors.New("not executable")
	}
	return nil
}
