#!/usr/bin/env bash
# Runs the test/kube module's tests the way `make test` does: the tests
# with real istiods (mostly waiting on istiod reloads and a 60 s volume lag)
# in one go test process, concurrently with the rest in another, so the
# waits overlap. The istiod tests are parallel tests, three at a time: the
# lagging-sync rotation alone waits ~130 s on its 60 s lag, and the others
# run beside it instead of after it. Both processes print their own
# closing lines; the exit code is non-zero if either failed.
set -u
cd "$(dirname "$0")"
go vet ./... || exit 1
log=$(mktemp)
(go test -count=1 -timeout 40m -parallel 3 -run '^TestIstiod' .; r=$?
  echo "=== test/kube, the istiod tests: done (exit $r) after ${SECONDS} s"; exit $r) >"$log" 2>&1 &
pid=$!
go test -count=1 -timeout 40m -skip '^TestIstiod' ./...
rc=$?
echo "=== test/kube, the other tests: done (exit $rc) after ${SECONDS} s"
wait "$pid"
rc2=$?
cat "$log"
rm -f "$log"
[ "$rc" -eq 0 ] && [ "$rc2" -eq 0 ]
