#!/usr/bin/env bash
# Links meshroot's own commands (cmd/NAME of this checkout) for the tests
# that run them as processes, once per content instead of once per test
# process, and puts them into a folder the caller names.
# Usage: test/tools/meshroot-bins.sh DIR NAME...  (e.g. DIR meshroot meshroot-plugin)
#
# Without it each harness ran `go build` itself: a warm `make test` linked
# meshroot six times and meshroot-plugin, meshroot-agent twice each (test/kube's
# two processes, test/e2e, test/spire, test/browser, internal/pluginhost), and
# the Go build cache keeps compiled packages, not linked programs.
# Here a link is keyed by what goes into it: the Go version, the build
# environment (GOFLAGS: the tags and -trimpath `make` sets), the link flags
# and every package's compiled archive (`go list -export` names each by the
# hash of its content, so any change to any package makes a new key). A key
# seen before is a hard link (or a copy) out of the cache; the cache keeps
# the most recently used few per command.
#
# The binaries link with -s -w, as `make build` ships them: no symbol table
# or DWARF, which the tests never read and which are most of a link's time.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR NAME..." >&2; exit 2; }
out=$1; shift
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${MESHROOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshroot-test}/link
keep=4 # per command: a few checkouts (worktrees, CI's workspace) at once
ldflags="-s -w"
mkdir -p "$cache" "$out"
cd "$root"

env_key=$({ go version; go env GOFLAGS GOOS GOARCH GOAMD64 CGO_ENABLED CC CGO_CFLAGS CGO_LDFLAGS; echo "ldflags $ldflags"; } | sha256sum | cut -c1-64)

for name in "$@"; do
  case "$name" in
    */* | .* | "") echo "$0: $name is not a command of cmd/" >&2; exit 2 ;;
  esac
  [ -d "cmd/$name" ] || { echo "$0: no cmd/$name in $root" >&2; exit 2; }
  # Compiles what changed (as go build would) and names every archive.
  key=$({ echo "$env_key"; go list -deps -export -f '{{.ImportPath}} {{.Export}}' "./cmd/$name"; } | sha256sum | cut -c1-24)
  entry="$cache/$name/$key"
  (
    exec {lock}>"$cache/.$name.lock"
    flock "$lock"
    if [ ! -x "$entry/$name" ]; then
      rm -rf "$entry.tmp" && mkdir -p "$entry.tmp"
      go build -ldflags "$ldflags" -o "$entry.tmp/$name" "./cmd/$name" >&2
      rm -rf "$entry" && mv "$entry.tmp" "$entry"
      # least recently used first out
      ls -1dt "$cache/$name"/* 2>/dev/null | grep -v '\.tmp$' | tail -n +$((keep + 1)) | xargs -r rm -rf
    fi
    touch "$entry"
    if [ ! "$out/$name" -ef "$entry/$name" ]; then
      # renamed into place: another process may be running the one it replaces
      ln -f "$entry/$name" "$out/.$name.$$" 2>/dev/null || cp "$entry/$name" "$out/.$name.$$"
      mv -f "$out/.$name.$$" "$out/$name"
    fi
  )
done
