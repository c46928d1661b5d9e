#!/usr/bin/env bash
# Syscalls per operation of a 3-node cluster, summed over the 3 servers, counted by
# `strace -c` (counts do not depend on machine load; strace's times do, ignore them).
#
#   bench/syscalls.sh [OPS] [BENCH ARGS...]
set -euo pipefail
OPS=${1:-20000}
shift || true
source "$(dirname "$0")/cluster.sh"
cluster_setup syscalls 7500
cluster_start --
"$BIN" bench --endpoints "$E" --ops $((OPS / 4)) --warmup 0 "$@" >/dev/null 2>&1
for i in 1 2 3; do
  strace -c -f -o "$OUT/strace$i" -p "${PIDS[$((i - 1))]}" 2>/dev/null &
  HELPERS+=($!)
done
sleep 0.5
"$BIN" bench --endpoints "$E" --ops "$OPS" --warmup 0 --skip-preload "$@" 2>/dev/null
for pid in "${HELPERS[@]}"; do kill -INT "$pid"; done
wait "${HELPERS[@]}" 2>/dev/null || true
HELPERS=()
# strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall.
cat "$OUT"/strace? | awk -v ops="$OPS" '
  $1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { n[$NF] += $4; t += $4 }
  END {
    for (s in n) if (n[s] / ops >= 0.01) printf "%-16s %8.2f per op\n", s, n[s] / ops;
    printf "%-16s %8.2f per op\n", "ALL", t / ops
  }' | sort -k2 -nr
