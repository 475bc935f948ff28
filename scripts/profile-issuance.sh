#!/usr/bin/env bash
# Where issuance time goes: starts tokenledger in a temp dir, puts closed-loop load on it with
# the loadgen bench, and meanwhile measures the ledger writer thread with perf:
#   1. syscall counts (tracepoints, ~no overhead): fdatasync = commits, pwrite64 = pages written
#      -> commands per batch and pages per commit;
#   2. `perf trace -s` of the writer thread: time spent in fdatasync / pwrite64 / futex;
#   3. a cpu-clock profile of the whole server split by thread (writer vs tokio workers).
# usage: scripts/profile-issuance.sh [mode=rest-token] [conc=64] [secs=8]
# Loopback only, bounded in time, the server is stopped by its PID. Needs perf (linux-perf).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-rest-token} conc=${2:-64} secs=${3:-8}
command -v perf >/dev/null || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 1; }
(cd "$root" && cargo build --release --bin tokenledger -q)
LOADGEN=$(cd "$root" && cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*loadgen-[0-9a-f]*\)).*/\1/p' | tail -1)
case "$LOADGEN" in /*) ;; *) LOADGEN=$root/$LOADGEN ;; esac
TL=$root/target/release/tokenledger
dir=$(mktemp -d /tmp/tl-profile.XXXXXX)
port=${TL_PORT:-8190}
TOKENLEDGER_QUOTA_TOKENS=0 "$TL" serve --data-dir "$dir/data" --listen 127.0.0.1:$port --log-level warn --quota-requests 0 2>"$dir/server.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
echo '{"institutions":[{"institution_id":"01001","name":"Bench"}],"clients":[{"client_id":"bench","client_secret":"bench-secret-0123456789abcdef","name":"bench","institution_ids":["01001"],"grant_types":["client_credentials"],"scopes":["api:read"],"introspect":true}]}' >"$dir/import.json"
"$TL" import "$dir/import.json" --server "http://127.0.0.1:$port" --data-dir "$dir/data" >/dev/null
wt=
for t in /proc/$pid/task/*; do [ "$(cat "$t/comm")" = ledger-writer ] && wt=$(basename "$t"); done
[ -n "$wt" ] || { echo "no ledger-writer thread" >&2; exit 1; }
window=$((secs - 3))
run() { "$LOADGEN" --url "http://127.0.0.1:$port" --server-pid "$pid" --mode "$mode" -c "$conc" -d "$secs" --warmup 1 --label "$1" | grep '^RESULT'; }
echo "# $(date -u +%FT%TZ) mode=$mode conc=$conc secs=$secs; perf windows are ${window}s inside each run"
echo "## raw fdatasync now:"; python3 - "$dir" <<'PY'
import os, sys, time
fd = os.open(os.path.join(sys.argv[1], "probe"), os.O_WRONLY | os.O_CREAT)
lat = []
for _ in range(300):
    t = time.perf_counter(); os.write(fd, b"x" * 200); os.fdatasync(fd); lat.append((time.perf_counter() - t) * 1e6)
lat.sort(); print(f"fdatasync p50_us={lat[150]:.0f} p99_us={lat[296]:.0f}")
PY
echo "## 1. writer syscall counts"
run counts &
lg=$!; sleep 2
perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64,syscalls:sys_enter_futex -t "$wt" -- sleep "$window" 2>&1 | awk -F, -v w="$window" '{printf "%s per_s=%.0f\n", $3, $1 / w}'
wait "$lg"
echo "## 2. writer syscall time (perf trace -s)"
run trace &
lg=$!; sleep 2
timeout -s INT "$window" perf trace -s -t "$wt" -e fdatasync,pwrite64,futex -o "$dir/trace.txt" >/dev/null 2>&1 || true
wait "$lg"
grep -E "fdatasync|pwrite64|futex|syscall|-----" "$dir/trace.txt" || true
echo "## 3. server CPU profile by thread (cpu-clock, 999 Hz)"
run profile &
lg=$!; sleep 2
perf record -q -e cpu-clock -F 999 -p "$pid" -o "$dir/perf.data" -- sleep "$window" >/dev/null 2>&1
wait "$lg"
perf report -i "$dir/perf.data" --stdio --no-children --sort comm 2>/dev/null | grep -E '^ +[0-9]'
perf report -i "$dir/perf.data" --stdio --no-children --sort comm,dso,sym 2>/dev/null | grep -E '^ +[0-9]' | head -25
