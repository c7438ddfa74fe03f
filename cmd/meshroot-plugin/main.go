// Command meshroot-plugin runs the key backends and upstream authorities
// that are kept out of the meshroot binary, so that meshroot links none of
// their SDKs: the cloud KMS key managers (awskms, cloudkms, azurekms) and
// the step-ca upstream. meshroot starts it as a child process at the first
// use of one of them, talks gRPC to it over a Unix socket in a 0700 folder
// (the folder keeps other users out), restarts it if it died, and
// stops it when it exits; the plugin dies with its parent. See
// docs/keys.md, "The plugin".
package main

import (
	"fmt"
	"os"

	"github.com/meshroot/meshroot/internal/pluginserve"
)

func main() {
	if err := pluginserve.Serve(); err != nil {
		fmt.Fprintln(os.Stderr, "meshroot-plugin:", err)
		os.Exit(1)
	}
}
