#!/usr/bin/env bash
# Syscalls, context switches and CPU per operation of a 3-node cluster, summed over
# the 3 servers, counted by `perf stat` from kernel tracepoints over WINDOW seconds in
# the middle of a bench run (unlike strace, it does not slow the servers down).
# Needs root (or perf_event_paranoid <= -1) and Debian's linux-perf.
#
#   bench/perfstat.sh [WINDOW] [BENCH ARGS...]    (default: 8 --clients 64)
#
# Per-operation counts depend on the load (batches grow with it): compare builds at
# the same flags, or at a fixed `--rate`.
set -euo pipefail
WINDOW=${1:-8}
shift || true
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--clients 64)
source "$(dirname "$0")/cluster.sh"
cluster_setup perfstat 7400
cluster_start --
cluster_load $((WINDOW + 6)) "${ARGS[@]}"
sleep 3
EVENTS=context-switches,cpu-clock
for s in fdatasync pwrite64 sendto recvfrom epoll_wait futex write; do
  EVENTS="$EVENTS,syscalls:sys_enter_$s"
done
perf stat -e "$EVENTS" -p "$(IFS=,; echo "${PIDS[*]}")" -- sleep "$WINDOW" 2>"$OUT/perf.out"
wait "${HELPERS[@]}"
HELPERS=()
tail -2 "$OUT/bench.out"
# ops/s is column 7 of the bench's row, 8 for an open loop ("open R/s").
RATE=$(tail -1 "$OUT/bench.out" | awk '{print ($4 == "open") ? $8 : $7}')
awk -v rate="$RATE" -v window="$WINDOW" '
  $3 == "cpu-clock" { gsub(",", "", $1); printf "%-28s %9.1f us per op\n", "server cpu", $1 * 1000 / (rate * window) }
  $2 ~ /^(syscalls:sys_enter_|context-switches)/ {
    gsub(",", "", $1); name = $2; sub("syscalls:sys_enter_", "", name)
    printf "%-28s %9.3f per op\n", name, $1 / (rate * window)
  }' "$OUT/perf.out"
