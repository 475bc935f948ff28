#!/usr/bin/env bash
# A/B of two tokenledger builds with the tonic echo anchor in the same run, alternating:
# each round runs the echo client, then `loadgen --spawn --server-bin` with OLD and with NEW
# (the order flips every round, so drift in the machine's load hits both). Prints the RESULT
# lines and, per round, each series' req/s over the echo's req/s of that round and the server's
# CPU per request (loadgen's server_cpu, in cores, over req/s).
#
# usage: OLD=<binary> NEW=<binary> scripts/ab-grpc.sh
# env:   ROUNDS=2 DUR=10 CONC=64 MODES=grpc-token,rest-token,grpc-introspect OUT=/tmp/ab-<stamp>
#        LOADGEN=<loadgen bench binary, found by cargo if unset>, ECHO_BIN, ECHO_CLIENT (under /tmp/anchors)
# Loopback only; the echo server is tracked by PID and stopped with `kill <pid>`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
: "${OLD:?OLD=<old tokenledger binary>}" "${NEW:?NEW=<new tokenledger binary>}"
ROUNDS=${ROUNDS:-2}
DUR=${DUR:-10}
CONC=${CONC:-64}
MODES=${MODES:-grpc-token,rest-token,grpc-introspect}
OUT=${OUT:-/tmp/ab-$(date +%Y%m%d-%H%M%S)}
ECHO_BIN=${ECHO_BIN:-/tmp/anchors/target/release/grpc-echo-server}
ECHO_CLIENT=${ECHO_CLIENT:-/tmp/anchors/target/release/grpc-echo-client}
mkdir -p "$OUT"
if [ -z "${LOADGEN:-}" ]; then
  LOADGEN=$(cd "$root" && cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*loadgen-[0-9a-f]*\)).*/\1/p' | tail -1)
  case "$LOADGEN" in /*) ;; *) LOADGEN=$root/$LOADGEN ;; esac
fi
[ -x "$LOADGEN" ] || { echo "cannot find the loadgen bench binary" >&2; exit 1; }

pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$port "$ECHO_BIN" 2>"$OUT/echo.server.log" &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
"$ECHO_CLIENT" "http://127.0.0.1:$port" "$CONC" 1 100 1 1 >/dev/null

raw=$OUT/raw.txt
echo "# $(date -u +%FT%TZ) rounds=$ROUNDS dur=${DUR}s conc=$CONC modes=$MODES old=$OLD new=$NEW loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" | tee "$raw"
for r in $(seq "$ROUNDS"); do
  echo "round=$r series=tonic-echo $("$ECHO_CLIENT" "http://127.0.0.1:$port" "$CONC" "$DUR" 100 1 1)" | tee -a "$raw"
  if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    if [ "$which" = old ]; then bin=$OLD; else bin=$NEW; fi
    "$LOADGEN" --spawn --server-bin "$bin" --mode "$MODES" -c "$CONC" -d "$DUR" --label "$which" \
      | grep '^RESULT' | sed "s/^/round=$r /" | tee -a "$raw"
  done
done
echo "# $(date -u +%FT%TZ) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$raw"

# per round: req/s of each label/mode, its ratio to the echo's req/s, and server CPU µs per request
awk '
  { delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
  /series=tonic-echo/ { echo[v["round"]] = v["rps"]; next }
  /RESULT/ {
    key = v["label"] " " v["mode"]
    rps[key] = rps[key] " " v["rps"]
    ratio[key] = ratio[key] sprintf(" %.3f", v["rps"] / echo[v["round"]])
    cpu[key] = cpu[key] (v["server_cpu"] == "na" ? " na" : sprintf(" %.1f", v["server_cpu"] * 1e6 / v["rps"]))
  }
  END { for (k in rps) printf "%-24s req/s:%s   / echo:%s   server µs/req:%s\n", k, rps[k], ratio[k], cpu[k] }' "$raw" | sort | tee "$OUT/summary.txt"
