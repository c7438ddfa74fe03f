#!/usr/bin/env bash
# Builds the heavy test binaries (real components the end-to-end tests run)
# once per machine into a cache that survives between runs, keyed by version
# and by a stamp of each tool's module files (modkey).
# Usage: test/tools/build.sh [kube-apiserver|spire|vault|istiosigner|istiod|step-ca] ...
# (no argument: kube-apiserver, spire and vault);
#        test/tools/build.sh --list   what each tool compiles (for align.sh);
#        test/tools/build.sh --stale  the tools a build would compile;
#        test/tools/build.sh --modkey TOOL  the stamp its build would get.
# Prints the bin folder on stdout's last line (istiosigner and istiod also
# print "istiosigner PATH" / "istiod PATH" on a line of their own before it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${MESHROOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshroot-test}
mkdir -p "$cache/bin"

# Pinned versions (the cache keys); istiosigner and istiod are keyed by a
# hash of their module files too.
kube_v=v1.37.2 etcd_v=v3.7.0 spire_v=v1.13.3 vault_v=v1.21.1 stepca_v=v0.30.2
# The compiler leaves out DWARF: every build here links with -s -w, which
# drops it anyway, and not making it takes 12-13 % off a cold build's CPU
# (step-ca from an empty build cache, docs/performance.md). The same flags
# for every tool, so istiosigner and istiod share their build cache.
gcflags=-gcflags=all=-dwarf=false
# Vault's Kubernetes auth method, at the version vault_v pins in go.mod.
vault_kube_auth=github.com/hashicorp/vault-plugin-auth-kubernetes/cmd/vault-plugin-auth-kubernetes

# What each tool compiles: its module folder, then the build flags and
# packages beyond $gcflags, as `go build`/`go list` take them. The builds
# below, the module prefetch and test/tools/align.sh (through --list) all
# read this table, so that what is aligned is what is built.
spec() {
  case "$1" in
    kube-apiserver) echo "kubeapiserver k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3" ;;
    spire) echo "spire github.com/spiffe/spire/cmd/spire-server" ;;
    vault) echo "vault -tags minimal github.com/hashicorp/vault $vault_kube_auth" ;;
    istiosigner) echo "istiosigner ." ;;
    istiod) echo "istiod istio.io/istio/pilot/cmd/pilot-discovery" ;;
    # step-ca with cgo, as the other tools build, so that the packages it
    # shares with them (gRPC, protobuf, x/crypto, ...) compile once: with
    # CGO_ENABLED=0 every package above net and os/user has another build
    # ID. Its YubiKey and PKCS#11 key managers, which need libpcsclite and
    # are never used here, are left out by smallstep's own tags.
    step-ca) echo "stepca -tags noyubikey,nopkcs11 github.com/smallstep/certificates/cmd/step-ca" ;;
    *) return 1 ;;
  esac
}
all_tools=(kube-apiserver spire vault istiosigner istiod step-ca)

# A tool's stamp: its module files and sources, with the flags it is built
# with. A binary whose folder holds another stamp (or none) was built from
# other go.mod versions and is built again: the cache folders are named by
# the tool's own version only, which aligning other modules leaves alone.
modkey() {
  local dir words
  read -r dir words <<<"$(spec "$1")"
  (cd "$here/$dir" && cat go.mod go.sum && { cat ./*.go 2>/dev/null || true; } && echo "$gcflags $words") |
    sha256sum | cut -c1-16
}
# fresh TOOL FOLDER BINARY...: every binary is there and the stamp matches.
fresh() {
  local tool=$1 out=$2 b
  shift 2
  for b in "$@"; do [ -x "$out/$b" ] || return 1; done
  [ "$(cat "$out/.modkey" 2>/dev/null)" = "$(modkey "$tool")" ]
}
stamp() { modkey "$1" >"$2/.modkey"; }

# built TOOL: its binaries are in the cache, built from its module files
# as they are now.
built() {
  case "$1" in
    kube-apiserver) fresh "$1" "$cache/bin/kube-$kube_v" kube-apiserver etcd ;;
    spire) fresh "$1" "$cache/bin/spire-$spire_v" spire-server ;;
    vault) fresh "$1" "$cache/bin/vault-$vault_v-minimal" vault plugins/kubernetes ;;
    istiosigner) [ -x "$cache/bin/istiosigner-$(modkey "$1")/istiosigner" ] ;;
    istiod) [ -x "$cache/bin/istiod-$(modkey "$1")/pilot-discovery" ] ;;
    step-ca) fresh "$1" "$cache/bin/step-ca-$stepca_v" step-ca ;;
  esac
}

case "${1:-}" in
  --list)
    # One line per tool: "folder flags-and-packages" (for align.sh).
    for t in "${all_tools[@]}"; do spec "$t"; done
    exit 0 ;;
  --modkey)
    # The stamp a build of tool $2 from its module files as they are gets.
    spec "${2:-}" >/dev/null || { echo "unknown tool ${2:-}" >&2; exit 2; }
    modkey "$2"
    exit 0 ;;
  --stale)
    # The tools a build would compile: missing, or built from other
    # module files (after align.sh or a version change).
    for t in "${all_tools[@]}"; do built "$t" || echo "$t"; done
    exit 0 ;;
esac

# One build per tool at a time: tests call this script too, and `go test ./...`
# runs packages in parallel, so two callers may ask for the same tool at once.
# The second waits for the first and then finds the binary built.
locked() {
  local name=$1; shift
  exec {lockfd}>"$cache/bin/.$name.lock"
  flock "$lockfd"
  "$@"
  local rc=$?
  flock -u "$lockfd"
  exec {lockfd}>&-
  return $rc
}

build_kube() {
  local v=$kube_v etcdv=$etcd_v
  local out="$cache/bin/kube-$v"
  if built kube-apiserver; then return 0; fi
  echo "building kube-apiserver $v and etcd $etcdv into $out (cold: ~12 min on 2 cores)" >&2
  mkdir -p "$out.tmp"
  (cd "$here/kubeapiserver" &&
    go build "$gcflags" -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" \
      -o "$out.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2 &&
    go build "$gcflags" -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3 >&2)
  stamp kube-apiserver "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_spire() {
  local v=$spire_v
  local out="$cache/bin/spire-$v"
  if built spire; then return 0; fi
  echo "building spire-server $v into $out (cold: ~20 CPU-minutes)" >&2
  mkdir -p "$out.tmp"
  (cd "$here/spire" &&
    { grep -q spire-server go.mod || go get -tool "github.com/spiffe/spire/cmd/spire-server@$v" >&2; } &&
    GOBIN="$out.tmp" go install "$gcflags" github.com/spiffe/spire/cmd/spire-server >&2)
  stamp spire "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_vault() {
  # Vault's own minimal build (the `minimal` tag, its Makefile's
  # BUILD_MINIMAL): Vault's core with raft and in-memory storage and the
  # engines meshroot talks to (PKI, Transit, KV; auth: token, AppRole,
  # cert, userpass, JWT/OIDC), without the ~40 cloud and database plugins
  # and storage backends whose SDKs are most of the full build (128 MB of
  # Go source instead of 308). The one plugin meshroot needs beyond it,
  # Kubernetes auth, is built from the version this Vault pins and runs as
  # an external plugin: plugins/kubernetes, which vaultenv hands to dev
  # servers (-dev-plugin-dir registers it under that name). It is built
  # with the same tag so that the packages both link compile once.
  local v=$vault_v
  local out="$cache/bin/vault-$v-minimal"
  if built vault; then return 0; fi
  echo "building vault $v (minimal) and its Kubernetes auth plugin into $out (cold: see docs/performance.md; test peer only, never shipped)" >&2
  mkdir -p "$out.tmp/plugins"
  (cd "$here/vault" &&
    { grep -q "hashicorp/vault v" go.mod || go get "github.com/hashicorp/vault@$v" >&2; } &&
    go build "$gcflags" -tags minimal -ldflags "-s -w" -o "$out.tmp/vault" github.com/hashicorp/vault >&2 &&
    go build "$gcflags" -tags minimal -ldflags "-s -w" -o "$out.tmp/plugins/kubernetes" "$vault_kube_auth" >&2)
  stamp vault "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_istiosigner() {
  # Istio's CA code as a workload signer (test/tools/istiosigner), in a
  # folder named by its stamp (modkey).
  local v=v0.0.0-20260827124520-eed52ebb66ad
  local src="$here/istiosigner"
  local key
  key=$(modkey istiosigner)
  local out="$cache/bin/istiosigner-$key"
  if [ ! -x "$out/istiosigner" ]; then
    echo "building istiosigner (istio.io/istio $v) into $out (cold: ~5 CPU-minutes)" >&2
    mkdir -p "$out.tmp"
    (cd "$src" && go build "$gcflags" -ldflags "-s -w" -o "$out.tmp/istiosigner" . >&2)
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  echo "istiosigner $out/istiosigner"
}

build_istiod() {
  # istiod (pilot-discovery) from test/tools/istiod: a module of its own
  # requiring the same istio.io/istio as istiosigner, so every module both
  # use resolves to the same version and the module and build caches are
  # shared (the CA packages compile once). Keyed like istiosigner.
  local v=v0.0.0-20260827124520-eed52ebb66ad
  local src="$here/istiod"
  local key
  key=$(modkey istiod)
  local out="$cache/bin/istiod-$key"
  if [ ! -x "$out/pilot-discovery" ] && [ "${MESHROOT_SKIP_ISTIOD:-}" = 1 ]; then
    echo "istiod is not built and MESHROOT_SKIP_ISTIOD=1: not building it (tests that need it skip)" >&2
  elif [ ! -x "$out/pilot-discovery" ]; then
    echo "building istiod (pilot-discovery, istio.io/istio $v) into $out (cold: ~7.5 CPU-minutes after istiosigner, binary ~130 MB)" >&2
    mkdir -p "$out.tmp"
    # shellcheck disable=SC2046
    (cd "$src" && go build "$gcflags" -ldflags "-s -w" -o "$out.tmp/pilot-discovery" $(spec istiod | cut -d' ' -f2-) >&2)
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  echo "istiod $out/pilot-discovery"
}

build_stepca() {
  # smallstep's step-ca, a peer for signing comparisons and the step-ca
  # upstream's test server, with the tags spec gives. Its setup (ca.json,
  # certificates, JWK provisioner) is written by the tests themselves, so
  # the step CLI is not built.
  local v=$stepca_v
  local out="$cache/bin/step-ca-$v"
  if built step-ca; then return 0; fi
  echo "building step-ca $v into $out (cold: see docs/performance.md)" >&2
  mkdir -p "$out.tmp"
  (cd "$here/stepca" &&
    # shellcheck disable=SC2046 # flags and package, as spec gives them
    go build "$gcflags" -ldflags "-s -w" -o "$out.tmp/step-ca" $(spec step-ca | cut -d' ' -f2-) >&2)
  stamp step-ca "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(kube-apiserver spire vault)

# On a fresh machine, fetch the modules of every tool still to be built in
# the background first: the downloads (network-bound) then overlap the
# compiles (CPU-bound) instead of running between them. `go list -deps`
# fetches exactly the modules the build needs on this platform (go.mod and
# go.sum are committed complete: no `go mod tidy`, which would also fetch
# every other platform's). The module cache locks per module, so a build
# that gets to a module first just takes it. Failures are ignored here:
# the build itself reports them.
prefetch() {
  local tool=$1 dir words
  built "$tool" && return 0
  read -r dir words <<<"$(spec "$tool")"
  # $words: flags and packages, as the build passes them (unquoted)
  (cd "$here/$dir" && go list -deps $words >/dev/null 2>&1) || true
}
prefetch_pids=()
for t in "${targets[@]}"; do
  # istiosigner's modules are istiod's
  case "$t" in kube-apiserver|spire|vault|istiod|step-ca) ;; *) continue ;; esac
  prefetch "$t" &
  prefetch_pids+=($!)
done

for t in "${targets[@]}"; do
  case "$t" in
    kube-apiserver) locked kube build_kube ;;
    spire) locked spire build_spire ;;
    vault) locked vault build_vault ;;
    istiosigner) locked istiosigner build_istiosigner ;;
    istiod) locked istiod build_istiod ;;
    step-ca) locked step-ca build_stepca ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done
[ ${#prefetch_pids[@]} -eq 0 ] || wait "${prefetch_pids[@]}" 2>/dev/null || true
echo "$cache/bin"
