#!/usr/bin/env bash
# Cluster benchmark (issue 13): three release nodes on this machine against one single node, in
# one run, alternating, so only the same-run ratios mean anything (the three nodes share the
# cores). At $CONC concurrent clients (default 64), with the project's loadgen (real sockets,
# real fsync, every answer checked):
#   single node    REST issuance, REST introspection
#   cluster leader REST issuance, REST introspection
#   cluster follower REST issuance (forwarded to the leader), REST introspection (ReadIndex)
# then the time from SIGKILL of the leader to the first acknowledged issuance through a
# follower, $KILLS times. Prints RESULT lines, a table of medians and the target ratios, the
# server CPU and the commands per ledger batch of each issuance series.
#
# usage: scripts/bench-cluster.sh
# env:   ROUNDS=2 DUR=10 CONC=64 KILLS=5 OUT=bench/results/cluster-<stamp>
#        TL_BIN=<a tokenledger binary> (default: build this checkout's release binary)
# Every server is started here on 127.0.0.1, tracked by its PID, and stopped with kill.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-2}
DUR=${DUR:-10}
CONC=${CONC:-64}
KILLS=${KILLS:-5}
OUT=${OUT:-$root/bench/results/cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
log() { echo "[bench-cluster $(date +%H:%M:%S)] $*" >&2; }

# shellcheck source=scripts/cluster-common.sh
. "$root/scripts/cluster-common.sh"
echo "$IMPORT" >"$WORK/import.json"

log "single node"
TOKENLEDGER_QUOTA_TOKENS=0 "$TL" serve --data-dir "$WORK/single" --listen 127.0.0.1:18100 --log-level warn --quota-requests 0 >"$WORK/single.log" 2>&1 &
PIDS+=($!); SINGLE=$!
wait_ready http://127.0.0.1:18100 20
"$TL" import --server http://127.0.0.1:18100 --data-dir "$WORK/single" "$WORK/import.json" >/dev/null

log "three-node cluster"
start_cluster
log "leader node $LEADER, measured follower node $FOLLOWER"

run() { # label url modes
  "$LOADGEN" --url "$2" --mode "$3" -c "$CONC" -d "$DUR" --label "$1" | grep '^RESULT' | tee -a "$RAW"
}
ticks() { # pid: user+system CPU ticks so far
  awk '{print $14 + $15}' "/proc/$1/stat"
}
HZ=$(getconf CLK_TCK)
# Issuance with the CPU each server process spent on it: CPU microseconds per acknowledged
# issuance, per process, from /proc/PID/stat before and after (the loadgen's own CPU is not
# counted). Shows where a cluster's issuance goes when its three nodes share this machine.
# Also the commands per ledger batch on the node that decides (the leader, or the single node),
# from its tokenledger_ledger_batch_commands histogram before and after.
batch_sums() { # url: "sum count" of the batch-commands histogram
  curl -s "$1/metrics" | awk '/^tokenledger_ledger_batch_commands_sum/ {s=$2} /^tokenledger_ledger_batch_commands_count/ {c=$2} END {print s+0, c+0}'
}
run_cpu() { # label url deciding-node-url pids...
  local label=$1 url=$2 decider=$3; shift 3
  local pids=("$@") before=() pid i requests line batches_before batches_after
  for pid in "${pids[@]}"; do before+=("$(ticks "$pid")"); done
  batches_before=$(batch_sums "$decider")
  line=$("$LOADGEN" --url "$url" --mode rest-token -c "$CONC" -d "$DUR" --label "$label" | grep '^RESULT')
  echo "$line" | tee -a "$RAW"
  batches_after=$(batch_sums "$decider")
  echo "$batches_before $batches_after" | awk -v label="$label" '{c = $4 - $2; printf "BATCH label=%s batches=%d commands_per_batch=%.1f\n", label, c, (c > 0 ? ($3 - $1) / c : 0)}' | tee -a "$RAW"
  requests=$(echo "$line" | sed -n 's/.* requests=\([0-9]*\).*/\1/p')
  i=0
  for pid in "${pids[@]}"; do
    echo "CPU label=$label pid=$pid us_per_issuance=$(( ( $(ticks "$pid") - ${before[$i]} ) * 1000000 / HZ / (requests > 0 ? requests : 1) ))" | tee -a "$RAW"
    i=$((i + 1))
  done
}
for round in $(seq 1 "$ROUNDS"); do
  log "round $round"
  run_cpu single http://127.0.0.1:18100 http://127.0.0.1:18100 "$SINGLE"
  run single http://127.0.0.1:18100 rest-introspect
  run_cpu leader http://127.0.0.1:1810$LEADER http://127.0.0.1:1810$LEADER "$PID1" "$PID2" "$PID3"
  run leader http://127.0.0.1:1810$LEADER rest-introspect
  run_cpu follower http://127.0.0.1:1810$FOLLOWER http://127.0.0.1:1810$LEADER "$PID1" "$PID2" "$PID3"
  run follower http://127.0.0.1:1810$FOLLOWER rest-introspect
done

log "failover: SIGKILL the leader, time to the first acknowledged issuance through a follower"
for k in $(seq 1 "$KILLS"); do
  LEADER=""
  for i in 1 2 3; do [ "$(role http://127.0.0.1:1810$i)" = leader ] && LEADER=$i; done
  [ -n "$LEADER" ] || { log "no leader"; break; }
  OTHER=$(( LEADER % 3 + 1 ))
  eval "kill -9 \$PID$LEADER"
  t0=$(date +%s%N)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -u "$AUTH" -H "transactionId: $(cat /proc/sys/kernel/random/uuid)" \
      -H 'institutionId: 01001' -d grant_type=client_credentials http://127.0.0.1:1810$OTHER/oauth2/v1/token)" = 200 ]; do
    sleep 0.005
  done
  t1=$(date +%s%N)
  echo "RESULT label=failover kill=$k killed=$LEADER via=$OTHER ms=$(( (t1 - t0) / 1000000 ))" | tee -a "$RAW"
  start_node "$LEADER"
  wait_ready http://127.0.0.1:1810$LEADER 30
  sleep 1
done

python3 - "$RAW" <<'EOF' | tee "$OUT/summary.txt"
import re, statistics, sys
rows = {}
fail = []
cpu = {}
batch = {}
for line in open(sys.argv[1]):
    f = dict(re.findall(r'(\w+)=(\S+)', line))
    if line.startswith('BATCH'):
        batch.setdefault(f['label'], []).append(float(f['commands_per_batch'])); continue
    if line.startswith('CPU'):
        cpu.setdefault(f['label'], {}).setdefault(f['pid'], []).append(int(f['us_per_issuance'])); continue
    if f.get('label') == 'failover':
        fail.append(int(f['ms'])); continue
    rows.setdefault((f['label'], f['mode']), []).append((float(f['rps']), float(f['p99_ms'])))
med = lambda k, i: statistics.median(v[i] for v in rows[k]) if k in rows else float('nan')
print(f"{'series':<36}{'rps':>10}{'p99 ms':>10}")
for k in sorted(rows):
    print(f"{k[0] + ' ' + k[1]:<36}{med(k, 0):>10.0f}{med(k, 1):>10.2f}")
r = lambda a, b: med(a, 0) / med(b, 0)
print(f"issuance through the leader / single node:   {r(('leader','rest-token'), ('single','rest-token')):.2f}x (target >= 0.7)")
print(f"issuance through a follower / single node:   {r(('follower','rest-token'), ('single','rest-token')):.2f}x (target >= 0.7)")
print(f"follower introspection / leader's:           {r(('follower','rest-introspect'), ('leader','rest-introspect')):.2f}x (target >= 0.8)")
for label, per in sorted(cpu.items()):
    each = {pid: statistics.median(v) for pid, v in per.items()}
    print(f"server CPU per issuance, {label:<9} {sum(each.values()):>6.0f} us in all ({', '.join(f'{v:.0f}' for v in each.values())} per process)")
for label, per in sorted(batch.items()):
    print(f"commands per ledger batch, {label:<8} {statistics.median(per):>6.1f} (on the node that decides)")
if fail:
    print(f"kill to first acknowledged write, ms: {fail} (median {statistics.median(fail)}, target <= 2000)")
EOF
log "results in $OUT"
