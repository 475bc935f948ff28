# Shared by the cluster benchmarks (sourced, not run): a three-node cluster of release servers on
# 127.0.0.1 (API ports 1810<i>, Raft ports 1710<i>), every process tracked by its PID and killed
# on exit with the temp dir $WORK. Needs $root (the checkout) and a log function; sets $TL
# ($TL_BIN, or this checkout's release build) and $LOADGEN. Extra node settings go in $NODE_ENV
# (KEY=VALUE words, passed to env); $LOG_LEVEL (default warn) sets the nodes' log level.

log "building tokenledger and the loadgen bench (release)"
[ -n "${TL_BIN:-}" ] || (cd "$root" && cargo build --release --bin tokenledger -q)
LOADGEN=$(cd "$root" && cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*loadgen-[0-9a-f]*\)).*/\1/p' | tail -1)
case "$LOADGEN" in /*) ;; *) LOADGEN=$root/$LOADGEN ;; esac
[ -x "$LOADGEN" ] || { echo "cannot find the loadgen bench binary" >&2; exit 1; }
TL=${TL_BIN:-$root/target/release/tokenledger}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

IMPORT='{"institutions":[{"institution_id":"01001","name":"Bench"}],"clients":[{"client_id":"bench","client_secret":"bench-secret-0123456789abcdef","name":"bench","institution_ids":["01001"],"grant_types":["client_credentials"],"scopes":["api:read"],"introspect":true}]}'
AUTH="bench:bench-secret-0123456789abcdef"
PEERS="1=127.0.0.1:17101,2=127.0.0.1:17102,3=127.0.0.1:17103"

wait_ready() { # url, seconds
  local i
  for i in $(seq 1 $(($2 * 20))); do
    if curl -s -o /dev/null -w '%{http_code}' "$1/readyz" | grep -q 200; then return 0; fi
    sleep 0.05
  done
  echo "$1 did not become ready" >&2; return 1
}
role() { curl -s "$1/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("role",""))' 2>/dev/null || true; }

start_node() { # id
  local i=$1
  # shellcheck disable=SC2086
  env TOKENLEDGER_QUOTA_TOKENS=0 ${NODE_ENV:-} "$TL" serve --data-dir "$WORK/n$i" --listen 127.0.0.1:1810$i --node-id "$i" \
    --raft-listen 127.0.0.1:1710$i --peers "$PEERS" --log-level "${LOG_LEVEL:-warn}" --quota-requests 0 >>"$WORK/n$i.log" 2>&1 &
  PIDS+=($!); eval "PID$i=$!"
}

copy_keys() { # from-id to-id: the key files a node needs before its first start
  mkdir -p "$WORK/n$2"
  for f in keys.json signing-keys.json checkpoint.key admin.token; do cp "$WORK/n$1/$f" "$WORK/n$2/"; done
}

# Starts nodes 1-3, initialises the cluster on node 1, imports the bench client; sets LEADER and
# FOLLOWER (a node that does not lead).
start_cluster() {
  echo "$IMPORT" >"$WORK/import.json"
  start_node 1; sleep 1
  for i in 2 3; do copy_keys 1 "$i"; start_node "$i"; done
  sleep 1
  "$TL" cluster init --server http://127.0.0.1:18101 --data-dir "$WORK/n1" >/dev/null
  for i in 1 2 3; do wait_ready http://127.0.0.1:1810$i 20; done
  "$TL" import --server http://127.0.0.1:18101 --data-dir "$WORK/n1" "$WORK/import.json" >/dev/null
  LEADER=""; FOLLOWER=""
  for i in 1 2 3; do
    r=$(role http://127.0.0.1:1810$i)
    if [ "$r" = leader ]; then LEADER=$i; elif [ -z "$FOLLOWER" ]; then FOLLOWER=$i; fi
  done
}
