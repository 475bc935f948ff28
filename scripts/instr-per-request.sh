#!/usr/bin/env bash
# Instructions the server executes per request, by mode, under callgrind: repeatable on a
# shared, noisy machine where req/s is not. For each mode, one server (under valgrind) gets an
# unmeasured run (it pays the one-off PBKDF2 check), then two runs of N1 and N2 requests, each
# between `callgrind_control --zero` and `--dump`; (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost
# of one request with every per-run constant (connections, set-up requests) cancelled out.
# The dumps stay in $OUT for callgrind_annotate (the N2 dump of each mode is `<mode>.N2.out`).
#
# usage: scripts/instr-per-request.sh [modes, default grpc-token,rest-token,grpc-introspect,rest-introspect]
# env:   TL_BIN=target/release/tokenledger  LOADGEN=<loadgen bench binary, found by cargo if unset>
#        N1=500 N2=2500 CONC=64 GRPC_CONNS=1 OUT=/tmp/instr-<stamp>
#        ECHO=1 also measures the tonic echo anchor (ECHO_BIN, ECHO_CLIENT under /tmp/anchors),
#        whose client is bounded in time: requests are counted from its output (plus its 100
#        warm-up calls per run), with ECHO_SECS1=2 ECHO_SECS2=6.
# Loopback only; every process started here is tracked by PID and stopped with `kill <pid>`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
MODES=${1:-grpc-token,rest-token,grpc-introspect,rest-introspect}
TL_BIN=${TL_BIN:-$root/target/release/tokenledger}
N1=${N1:-500}
N2=${N2:-2500}
CONC=${CONC:-64}
GRPC_CONNS=${GRPC_CONNS:-1}
OUT=${OUT:-/tmp/instr-$(date +%Y%m%d-%H%M%S)}
ECHO_BIN=${ECHO_BIN:-/tmp/anchors/target/release/grpc-echo-server}
ECHO_CLIENT=${ECHO_CLIENT:-/tmp/anchors/target/release/grpc-echo-client}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${LOADGEN:-}" ]; then
  LOADGEN=$(cd "$root" && cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*loadgen-[0-9a-f]*\)).*/\1/p' | tail -1)
  case "$LOADGEN" in /*) ;; *) LOADGEN=$root/$LOADGEN ;; esac
fi
[ -x "$LOADGEN" ] || { echo "cannot find the loadgen bench binary" >&2; exit 1; }
log() { echo "[instr $(date +%H:%M:%S)] $*" >&2; }

pid=""
dir=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$dir" ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Total Ir of the newest dump of $pid, moved to $1.
take_dump() {
  callgrind_control --dump "$pid" >/dev/null
  local f; f=$(ls -t "$OUT"/cg."$pid".* | head -1)
  mv "$f" "$1"
  awk '/^summary:|^totals:/{print $2; exit}' "$1"
}
# One loadgen run of $2 requests of mode $1.
load() {
  "$LOADGEN" --url "http://127.0.0.1:$port" --mode "$1" -c "$CONC" --grpc-conns "$GRPC_CONNS" \
    --warmup 0 -d 3600 --requests "$2" --timeout-ms 120000 --label instr
}

start_server() { # data dir
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
    TOKENLEDGER_QUOTA_TOKENS=0 "$TL_BIN" serve --data-dir "$1" --listen "127.0.0.1:$port" --log-level warn --quota-requests 0 \
    >"$OUT/server.$mode.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -s -o /dev/null "http://127.0.0.1:$port/readyz" && return 0
    sleep 0.2
  done
  echo "the server did not start; see $OUT/server.$mode.log" >&2
  exit 1
}

echo "# $(date -u +%FT%TZ) tokenledger=$(cd "$root" && git rev-parse --short HEAD) bin=$TL_BIN conc=$CONC grpc_conns=$GRPC_CONNS n1=$N1 n2=$N2" | tee "$OUT/summary.txt"
IFS=, read -ra modes <<<"$MODES"
for mode in "${modes[@]}"; do
  dir=$(mktemp -d /tmp/tl-instr.XXXXXX)
  start_server "$dir/data"
  cat >"$dir/import.json" <<'JSON'
{"institutions":[{"institution_id":"01001","name":"Bench"}],"clients":[{"client_id":"bench","client_secret":"bench-secret-0123456789abcdef","name":"bench","institution_ids":["01001"],"grant_types":["client_credentials"],"scopes":["api:read"],"introspect":true}]}
JSON
  "$TL_BIN" import "$dir/import.json" --server "http://127.0.0.1:$port" --data-dir "$dir/data" >/dev/null
  log "$mode: warm-up"
  load "$mode" 200 >"$OUT/$mode.warm.txt"
  callgrind_control --zero "$pid" >/dev/null
  load "$mode" "$N1" >"$OUT/$mode.N1.txt"
  i1=$(take_dump "$OUT/$mode.N1.out")
  callgrind_control --zero "$pid" >/dev/null
  load "$mode" "$N2" >"$OUT/$mode.N2.txt"
  i2=$(take_dump "$OUT/$mode.N2.out")
  per=$(( (i2 - i1) / (N2 - N1) ))
  echo "mode=$mode ir_n1=$i1 ir_n2=$i2 ir_per_request=$per" | tee -a "$OUT/summary.txt"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  rm -rf "$dir"; dir=""
done

if [ "${ECHO:-0}" = 1 ]; then
  mode=tonic-echo
  port=$(free_port)
  ADDR=127.0.0.1:$port valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" "$ECHO_BIN" >"$OUT/server.echo.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
  "$ECHO_CLIENT" "http://127.0.0.1:$port" "$CONC" 1 100 1 1 >/dev/null
  counted() { # secs -> requests served, its 100 warm-up calls included
    local line; line=$("$ECHO_CLIENT" "http://127.0.0.1:$port" "$CONC" "$1" 100 1 1)
    echo "$line" >>"$OUT/echo.txt"
    echo $(( $(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line") + 100 ))
  }
  callgrind_control --zero "$pid" >/dev/null
  r1=$(counted "${ECHO_SECS1:-2}")
  i1=$(take_dump "$OUT/$mode.N1.out")
  callgrind_control --zero "$pid" >/dev/null
  r2=$(counted "${ECHO_SECS2:-6}")
  i2=$(take_dump "$OUT/$mode.N2.out")
  per=$(( (i2 - i1) / (r2 - r1) ))
  echo "mode=$mode requests_n1=$r1 requests_n2=$r2 ir_n1=$i1 ir_n2=$i2 ir_per_request=$per" | tee -a "$OUT/summary.txt"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
fi
log "dumps and summary in $OUT"
