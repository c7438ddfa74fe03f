#!/usr/bin/env bash
# Aligns the test tools' modules: every module that two tools compile is
# required at one version, the highest any of them builds, so that its
# packages compile once into the build cache for all six instead of once
# per version (docs/performance.md, "One version of each shared module").
#
# Usage:
#   test/tools/align.sh            raise each lagging module with `go get`
#                                  in the tool's folder, in rounds, until no
#                                  tool lags (a raise can raise others)
#   test/tools/align.sh --check    list the modules a tool builds at a lower
#                                  version than another tool; exit 1 if any
#   test/tools/align.sh --highest  filter: "path version" lines in, the
#                                  highest version of each path out (semver)
#
# What a tool builds (folder, flags, packages) comes from build.sh --list,
# the table its builds use. Modules are read with `go list -deps`, so only
# the ones compiled on this platform count, and a replaced module counts
# at its replacement's version. A module a tool pins with a replace
# directive (kube-apiserver's k8s.io staging modules) is never raised
# there; the others are raised to it.
#
# Run it after changing any tool's go.mod, then `make tools` (the changed
# tools rebuild: build.sh stamps each build with its go.mod and go.sum).
# TestToolModulesAligned runs --check.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# highest: reads "path version" lines, prints "path version" with the
# highest semantic version of each path (pre-releases, including Go's
# pseudo-versions, below their release; +incompatible ignored).
highest() {
  awk '
    function num(x) { return x ~ /^[0-9]+$/ }
    # cmpid: compares two pre-release identifiers per semver 2.0.0
    function cmpid(a, b) {
      if (num(a) && num(b)) return (a + 0 < b + 0) ? -1 : (a + 0 > b + 0)
      if (num(a)) return -1
      if (num(b)) return 1
      return (a < b) ? -1 : (a > b)
    }
    function cmp(a, b,   ca, cb, pa, pb, i, na, nb, ia, ib, r) {
      sub(/\+.*/, "", a); sub(/\+.*/, "", b); sub(/^v/, "", a); sub(/^v/, "", b)
      pa = ""; pb = ""
      if ((i = index(a, "-")) > 0) { pa = substr(a, i + 1); a = substr(a, 1, i - 1) }
      if ((i = index(b, "-")) > 0) { pb = substr(b, i + 1); b = substr(b, 1, i - 1) }
      split(a, ca, "."); split(b, cb, ".")
      for (i = 1; i <= 3; i++) if (ca[i] + 0 != cb[i] + 0) return (ca[i] + 0 < cb[i] + 0) ? -1 : 1
      if (pa == pb) return 0
      if (pa == "") return 1
      if (pb == "") return -1
      na = split(pa, ia, "."); nb = split(pb, ib, ".")
      for (i = 1; i <= na && i <= nb; i++) if ((r = cmpid(ia[i], ib[i])) != 0) return r
      return (na < nb) ? -1 : (na > nb)
    }
    NF >= 2 {
      if (!($1 in best)) order[++n] = $1
      if (!($1 in best) || cmp($2, best[$1]) > 0) best[$1] = $2
    }
    END { for (i = 1; i <= n; i++) print order[i], best[order[i]] }
  '
}

if [ "${1:-}" = --highest ]; then
  highest
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# modules: for each tool, "$work/DIR.mods" with "path version R|-" lines
# (R: replaced in that tool's go.mod), and "$work/all" with every line.
modules() {
  : >"$work/all"
  local dir words
  while read -r dir words; do
    # $words: flags and packages, unquoted as build.sh passes them
    (cd "$here/$dir" && go list -deps -f \
      '{{with .Module}}{{if not .Main}}{{.Path}} {{with .Replace}}{{.Version}} R{{else}}{{.Version}} -{{end}}{{end}}{{end}}' \
      $words) | sort -u >"$work/$dir.mods" || {
      echo "align.sh: go list failed in test/tools/$dir (modules not downloaded? run make tools)" >&2
      return 1
    }
    sed "s|^|$dir |" "$work/$dir.mods" >>"$work/all"
  done < <("$here/build.sh" --list)
}

# lagging: "dir path have want R|-" for each module a tool builds below
# the highest version another tool builds.
lagging() {
  awk '{print $2, $3}' "$work/all" | highest >"$work/highest"
  awk 'NR == FNR { want[$1] = $2; next } $3 != want[$2] { print $1, $2, $3, want[$2], $4 }' \
    "$work/highest" "$work/all"
}

# raise DIR: `go get` each "path version" of $work/get in test/tools/DIR.
# The versions asked for are the highest other tools compile; a raise of
# one may need another module above that (go get then refuses: "X@v1
# requires Y@v2, not Y@v1"), so each such Y is asked for at the version
# required and the whole get tried again.
raise() {
  local dir=$1 try
  for try in 1 2 3 4 5 6 7 8 9 10; do
    # shellcheck disable=SC2046
    if (cd "$here/$dir" && go get $(awk '{print $1 "@" $2}' "$work/get")) 2>"$work/err"; then
      grep -v '^go: downloading' "$work/err" >&2 || true
      return 0
    fi
    sed -n 's/.* requires \([^ @]*\)@\([^ ,]*\), not .*/\1 \2/p' "$work/err" >"$work/need"
    if [ ! -s "$work/need" ]; then
      cat "$work/err" >&2
      echo "align.sh: go get failed in test/tools/$dir" >&2
      return 1
    fi
    cat "$work/get" "$work/need" | highest >"$work/get.new"
    mv "$work/get.new" "$work/get"
  done
  cat "$work/err" >&2
  echo "align.sh: go get in test/tools/$dir still refused after 10 tries" >&2
  return 1
}

if [ "${1:-}" = --check ]; then
  modules
  lagging >"$work/lag"
  if [ -s "$work/lag" ]; then
    echo "modules a test tool builds below another tool's version (run test/tools/align.sh):" >&2
    awk '{printf "  %s: %s %s, another tool has %s%s\n", $1, $2, $3, $4, ($5 == "R" ? " (pinned by a replace here)" : "")}' "$work/lag" >&2
    exit 1
  fi
  echo "test tools aligned: $(awk '{print $2}' "$work/all" | sort | uniq -d | wc -l) modules shared, each at one version"
  exit 0
fi

[ $# -eq 0 ] || { echo "usage: $0 [--check | --highest]" >&2; exit 2; }
# go list may then add the go.sum lines a raised module's packages need
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
for round in 1 2 3 4 5 6 7 8; do
  modules
  lagging >"$work/lag"
  if [ ! -s "$work/lag" ]; then
    echo "aligned after $((round - 1)) round(s) of go get"
    exit 0
  fi
  if ! awk '$5 != "R"' "$work/lag" | grep -q .; then
    echo "align.sh: only modules pinned by replace directives lag; raise the replace by hand:" >&2
    cat "$work/lag" >&2
    exit 1
  fi
  echo "round $round: $(wc -l <"$work/lag") module versions to raise" >&2
  for dir in $(awk '$5 != "R" {print $1}' "$work/lag" | sort -u); do
    awk -v d="$dir" '$1 == d && $5 != "R" {print $2, $4}' "$work/lag" >"$work/get"
    raise "$dir"
  done
done
echo "align.sh: still lagging after 8 rounds:" >&2
cat "$work/lag" >&2
exit 1
