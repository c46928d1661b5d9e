#!/usr/bin/env bash
# CPU of an idle 3-node cluster with RANGES ranges (default 64), as a percentage of
# one core summed over the 3 servers, over SECONDS (default 20) after a settle.
#
#   bench/idle.sh [RANGES] [SECONDS]
set -euo pipefail
RANGES=${1:-64}
SECONDS_IDLE=${2:-20}
source "$(dirname "$0")/cluster.sh"
cluster_setup idle 7600
# RANGES - 3 split keys: with the meta range around "_/" that makes RANGES ranges.
# Fixed-width numbers, so the keys sort as they count (k000099 < k000100) up to a
# million ranges.
if (( RANGES < 4 || RANGES > 1000000 )); then
    echo "idle.sh: RANGES must be 4 to 1000000, not $RANGES" >&2
    exit 2
fi
# One --split-keys flag per 10,000 keys: a single argument may hold 128 KiB at most.
SPLIT_FLAGS=()
while read -r keys; do SPLIT_FLAGS+=(--split-keys "$keys"); done < <(
    seq 1 $((RANGES - 3)) | awk '{printf "%sk%06d", (NR % 10000 == 1 ? (NR > 1 ? "\n" : "") : ","), $1} END {print ""}')
cluster_start -- "${SPLIT_FLAGS[@]}"
# One write, so every node is up and the leaders are elected.
for _ in $(seq 50); do "$BIN" --endpoints "$E" put idle-ready 1 >/dev/null 2>&1 && break; sleep 0.2; done
echo "ranges with a leader: $("$BIN" --endpoints "$E" status 2>/dev/null | awk '$1 ~ /^r[0-9]/ && $7 ~ /^n[0-9]/' | wc -l)"
sleep 3
ticks() { for pid in "${PIDS[@]}"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | paste -sd+ | bc; }
before=$(ticks)
sleep "$SECONDS_IDLE"
after=$(ticks)
# USER_HZ = 100 ticks per second: ticks / seconds is already percent of one core.
echo "idle CPU: $(echo "scale=2; ($after - $before) / $SECONDS_IDLE" | bc)% of one core over 3 nodes"
