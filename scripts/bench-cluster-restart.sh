#!/usr/bin/env bash
# Cluster restarts at scale (issue 13): three release nodes on this machine are filled through
# the leader for $FILL_SECS seconds (closed-loop REST issuance at $CONC, every answer checked),
# with Raft snapshots every $SNAP_ENTRIES entries so that the log is purged; then
#   1. a follower is stopped with SIGTERM and started again: time to ready (it starts from its
#      own projection snapshot and catches up from the Raft log), and to its applied seq equal
#      to the leader's;
#   2. a fourth node with an empty data directory is added as a learner: the log it lacks is
#      purged, so it installs the leader's Raft snapshot (the whole ledger range) and applies it;
#      time from add-learner to its applied seq equal to the leader's, and events per second.
# Prints RESULT lines; every server is started here on 127.0.0.1, tracked by its PID and stopped
# with kill.
#
# usage: scripts/bench-cluster-restart.sh
# env:   FILL_SECS=200 CONC=64 SNAP_ENTRIES=5000 OUT=bench/results/cluster-restart-<stamp>
#        TL_BIN=<a tokenledger binary> (default: build this checkout's release binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
FILL_SECS=${FILL_SECS:-200}
CONC=${CONC:-64}
SNAP_ENTRIES=${SNAP_ENTRIES:-5000}
OUT=${OUT:-$root/bench/results/cluster-restart-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
log() { echo "[bench-cluster-restart $(date +%H:%M:%S)] $*" >&2; }

NODE_ENV="TOKENLEDGER_RAFT_SNAPSHOT_EVERY_ENTRIES=$SNAP_ENTRIES"
# shellcheck source=scripts/cluster-common.sh
. "$root/scripts/cluster-common.sh"

applied_seq() { # node id: its applied seq, from its own cluster status (empty if it does not answer)
  "$TL" cluster status --json --server "http://127.0.0.1:1810$1" --data-dir "$WORK/n1" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["applied_seq"])' 2>/dev/null || true
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Waits until node $1 has applied as far as the leader: prints the ms it took since $2 (a now_ms).
wait_caught_up() {
  local target seq
  target=$(applied_seq "$LEADER")
  for _ in $(seq 1 12000); do
    seq=$(applied_seq "$1")
    if [ -n "$seq" ] && [ "$seq" -ge "$target" ]; then echo $(( $(now_ms) - $2 )); return 0; fi
    sleep 0.05
  done
  echo "node $1 did not catch up with seq $target" >&2; return 1
}

log "three-node cluster, Raft snapshots every $SNAP_ENTRIES entries"
start_cluster
log "leader node $LEADER; filling for ${FILL_SECS}s at c$CONC"
"$LOADGEN" --url "http://127.0.0.1:1810$LEADER" --mode rest-token -c "$CONC" -d "$FILL_SECS" --label fill | grep '^RESULT' | tee -a "$RAW"
SEQ=$(applied_seq "$LEADER")
echo "RESULT label=filled events=$SEQ ledger_bytes=$(stat -c %s "$WORK/n$LEADER/ledger.redb")" | tee -a "$RAW"

log "1. SIGTERM follower $FOLLOWER and start it again"
eval "kill -TERM \$PID$FOLLOWER; wait \$PID$FOLLOWER" || true
t0=$(now_ms)
LOG_LEVEL=info start_node "$FOLLOWER"
wait_ready "http://127.0.0.1:1810$FOLLOWER" 120
ready=$(( $(now_ms) - t0 ))
caught=$(wait_caught_up "$FOLLOWER" "$t0")
started=$(grep -a 'started from\|replayed' "$WORK/n$FOLLOWER.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -2 | tr '\n' ' ' || true)
echo "RESULT label=follower-restart events=$SEQ ready_ms=$ready caught_up_ms=$caught" | tee -a "$RAW"
echo "  its log: ${started:-no start line}" | tee -a "$RAW"

log "2. a new learner (node 4) installs the leader's snapshot"
copy_keys 1 4
PEERS="$PEERS,4=127.0.0.1:17104"
LOG_LEVEL=info start_node 4
sleep 2
t0=$(now_ms)
"$TL" cluster add-learner 4 127.0.0.1:17104 --server "http://127.0.0.1:1810$LEADER" --data-dir "$WORK/n1" >/dev/null
caught=$(wait_caught_up 4 "$t0")
seq=$(applied_seq 4)
echo "RESULT label=learner-install events=$seq caught_up_ms=$caught events_per_s=$(( seq * 1000 / (caught > 0 ? caught : 1) ))" | tee -a "$RAW"
echo "  raft snapshot files of node 4: $(ls "$WORK/n4" | grep 'raft-snapshot' | tr '\n' ' ')" | tee -a "$RAW"
grep -ah 'snapshot' "$WORK/n4.log" | sed 's/\x1b\[[0-9;]*m//g' | head -5 | tee -a "$RAW" || true
log "results in $OUT"
