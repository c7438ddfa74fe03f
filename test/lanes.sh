#!/usr/bin/env bash
# The test part of `make test`, in two lanes at once: the main module's
# tests (`make unit`) in one, and the modules against real components
# (`make test-kube test-spire test-browser`) in the other. The second lane
# spends most of its time waiting on apiservers, istiod reloads and volume
# lags, so on 2 cores the lanes overlap instead of queueing (measured in
# docs/performance.md, "Test suite"). The first lane streams; the second's
# output follows when both are done; each lane's closing line says how many
# seconds after the start it ended (the long pole). Exits non-zero if
# either failed.
set -u
cd "$(dirname "$0")/.."
make=${MAKE:-make}
log=$(mktemp)
ended=$(mktemp)
trap 'rm -f "$log" "$ended"' EXIT
# The second lane notes when it ended: its output is held until both are
# done, so the line below would otherwise give the later lane's time.
("$make" --no-print-directory -k test-kube test-spire test-browser test-tracestat >"$log" 2>&1
  r=$?; echo "$SECONDS" >"$ended"; exit $r) &
pid=$!
"$make" --no-print-directory unit
rc=$?
echo "=== unit tests done (exit $rc) after ${SECONDS} s; waiting for test/kube, test/spire, test/browser, test/bench/tracestat"
wait "$pid"
rc2=$?
cat "$log"
echo "=== test/kube, test/spire, test/browser, test/bench/tracestat done (exit $rc2) after $(cat "$ended") s"
[ "$rc" -eq 0 ] && [ "$rc2" -eq 0 ]
