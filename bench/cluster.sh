# Sourced by bench/callgrind.sh, syscalls.sh and idle.sh: a 3-node cluster of
# `rangedb server` on loopback ports BASE+1..BASE+3, data and logs in $OUT.
#
#   cluster_setup NAME BASE      sets BIN, OUT (default /tmp/rangedb-NAME, emptied),
#                                P (the --peers flag), E (the --endpoints flag) and
#                                stops every process in PIDS and HELPERS on exit
#   cluster_start [PREFIX...] -- [SERVER FLAGS...]
#                                starts the 3 servers, each run as `PREFIX... rangedb
#                                server ...` (e.g. under valgrind; %i in PREFIX is the
#                                node number), and appends their pids to PIDS;
#                                $SERVER_FLAGS (split on spaces) is added to the
#                                flags, e.g. SERVER_FLAGS="--leader-placement elected"
#   cluster_load SECONDS [BENCH ARGS...]
#                                once the cluster takes a write, runs `rangedb bench`
#                                against it for SECONDS (1 s warm-up) in the background,
#                                output in $OUT/bench.out, pid in HELPERS
PIDS=()
HELPERS=()

cluster_setup() {
  BIN=${BIN:-target/release/rangedb}
  OUT=${OUT:-/tmp/rangedb-$1}
  BASE=${BASE:-$2}
  rm -rf "$OUT" && mkdir -p "$OUT"
  P="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
  E="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
  trap cluster_stop EXIT
}

cluster_stop() {
  for pid in "${HELPERS[@]}" "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}

cluster_start() {
  local prefix=() flags=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do prefix+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  flags=("$@")
  # shellcheck disable=SC2206 # split on spaces on purpose
  flags+=(${SERVER_FLAGS:-})
  for i in 1 2 3; do
    "${prefix[@]//%i/$i}" "$BIN" server --id $i --listen 127.0.0.1:$((BASE + i)) \
      --peers "$P" --data-dir "$OUT/data$i" "${flags[@]}" 2>"$OUT/node$i.log" &
    PIDS+=($!)
  done
}

cluster_load() {
  local seconds=$1
  shift
  for _ in $(seq 50); do "$BIN" --endpoints "$E" put ready 1 >/dev/null 2>&1 && break; sleep 0.2; done
  "$BIN" --endpoints "$E" bench --duration "$seconds" --warmup 1 "$@" >"$OUT/bench.out" 2>&1 &
  HELPERS+=($!)
}
