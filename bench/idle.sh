#!/usr/bin/env bash
# CPU of an idle 3-node cluster with RANGES ranges (default 64), as a percentage of
# one core summed over the 3 servers, over SECONDS (default 20) after a settle.
#
#   bench/idle.sh [RANGES] [SECONDS]
set -euo pipefail
RANGES=${1:-64}
SECONDS_IDLE=${2:-20}
BIN=${BIN:-target/release/rangedb}
OUT=${OUT:-/tmp/rangedb-idle}
BASE=${BASE:-7600}
rm -rf "$OUT" && mkdir -p "$OUT"
P="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
E="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
# RANGES - 3 split keys: with the meta range around "_/" that makes RANGES ranges.
SPLITS=$(seq 1 $((RANGES - 3)) | awk '{printf "%sk%04d", (NR > 1 ? "," : ""), $1 * 100}')
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
for i in 1 2 3; do
  "$BIN" server --id $i --listen 127.0.0.1:$((BASE + i)) --peers "$P" \
    --data-dir "$OUT/data$i" --split-keys "$SPLITS" 2>"$OUT/node$i.log" &
  PIDS+=($!)
done
# One write, so every node is up and the leaders are elected.
for _ in $(seq 50); do "$BIN" --endpoints "$E" put idle-ready 1 >/dev/null 2>&1 && break; sleep 0.2; done
echo "ranges with a leader: $("$BIN" --endpoints "$E" status 2>/dev/null | awk '$1 ~ /^r[0-9]/ && $4 ~ /^n/' | wc -l)"
sleep 3
ticks() { for pid in "${PIDS[@]}"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | paste -sd+ | bc; }
before=$(ticks)
sleep "$SECONDS_IDLE"
after=$(ticks)
# USER_HZ = 100 ticks per second: ticks / seconds is already percent of one core.
echo "idle CPU: $(echo "scale=2; ($after - $before) / $SECONDS_IDLE" | bc)% of one core over 3 nodes"
