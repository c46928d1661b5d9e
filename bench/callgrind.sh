#!/usr/bin/env bash
# Instructions per operation of a 3-node cluster, summed over the 3 servers, counted
# by callgrind: stable on a busy machine, unlike wall time.
#
#   bench/callgrind.sh [OPS] [BENCH ARGS...]     e.g. bench/callgrind.sh 5000 --workload get
#
# Starts 3 `rangedb server`s on loopback, each under callgrind, warms up with OPS/4
# operations, zeroes the counters, runs OPS operations with `rangedb bench`, dumps the
# counters, stops the servers and prints Ir per operation per node and in total. The
# profiles stay in $OUT (default /tmp/rangedb-callgrind) for callgrind_annotate.
set -euo pipefail
OPS=${1:-5000}
shift || true
source "$(dirname "$0")/cluster.sh"
cluster_setup callgrind 7400
# Ticks of 200 ms: valgrind slows the servers ~50x; keep elections from firing.
cluster_start valgrind --tool=callgrind --callgrind-out-file="$OUT/node%i.%p" -- --tick-ms 200
"$BIN" bench --endpoints "$E" --ops $((OPS / 4)) --warmup 0 "$@" >/dev/null 2>&1
for pid in "${PIDS[@]}"; do callgrind_control -z "$pid" >/dev/null; done
"$BIN" bench --endpoints "$E" --ops "$OPS" --warmup 0 --skip-preload "$@" 2>/dev/null
for pid in "${PIDS[@]}"; do callgrind_control -d "$pid" >/dev/null; done
sleep 1
TOTAL=0
for i in 1 2 3; do
  # The dump after -z holds exactly the measured interval: take the newest part file.
  f=$(ls -t "$OUT"/node$i.*.[0-9]* 2>/dev/null | head -1)
  ir=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
  echo "node $i: $ir Ir, $((ir / OPS)) Ir/op  ($f)"
  TOTAL=$((TOTAL + ir))
done
echo "total: $((TOTAL / OPS)) Ir/op over 3 nodes"
