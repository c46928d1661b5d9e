#!/usr/bin/env bash
# Where the servers' CPU goes: `perf record` (cpu-clock, DWARF call graphs) of the 3
# servers of a cluster for WINDOW seconds in the middle of a bench run, then the share
# of the put path's main frames (bench/perf_children.py). Needs root or
# perf_event_paranoid <= 1, and Debian's linux-perf.
#
#   bench/profile.sh [WINDOW] [BENCH ARGS...]     (default: 3 --clients 64)
set -euo pipefail
WINDOW=${1:-3}
shift || true
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--clients 64)
HERE=$(dirname "$0")
source "$HERE/cluster.sh"
cluster_setup profile 7300
cluster_start --
cluster_load $((WINDOW + 8)) "${ARGS[@]}"
sleep 4
perf record -F 1000 -e cpu-clock --call-graph dwarf,16384 -o "$OUT/perf.data" \
  -p "$(IFS=,; echo "${PIDS[*]}")" -- sleep "$WINDOW" 2>/dev/null
wait "${HELPERS[@]}"
HELPERS=()
tail -1 "$OUT/bench.out"
perf script -F comm,tid,ip,sym -i "$OUT/perf.data" 2>/dev/null >"$OUT/stacks.txt"
python3 "$HERE/perf_children.py" "$OUT/stacks.txt" Node::flush_write Node::flush_sync \
  Replica::apply maybe_snapshot do_fsync __x64_sys_pwrite64 do_epoll_wait \
  __x64_sys_sendto __x64_sys_recvfrom __x64_sys_futex asm_exc_page_fault
echo "stacks: $OUT/stacks.txt (python3 $HERE/perf_children.py $OUT/stacks.txt FRAME...)"
