#!/usr/bin/env python3
"""fdatasync of small appends to a 64 MiB file, three ways: blocks only allocated
(fallocate: every write lands in an "unwritten" extent, so each fdatasync also writes
the inode), zero-filled beforehand, and allocated but zeroed 1 MiB ahead of the
writes (what the WAL does, src/storage/wal.rs "Zeroing ahead").

    python3 bench/fsync.py [DIR] [SYNCS] [WRITE_BYTES]    (default: . 4000 4096)
"""
import os
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
SYNCS = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
TOTAL = 64 << 20
CHUNK = 1 << 20


def run(mode):
    path = os.path.join(DIR, f"rangedb-fsync-test-{mode}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        os.posix_fallocate(fd, 0, TOTAL)
        if mode == "zero-filled":
            zeros = b"\0" * (1 << 20)
            for i in range(TOTAL >> 20):
                os.pwrite(fd, zeros, i << 20)
        os.fsync(fd)
        data = b"x" * SIZE
        latencies, zeroed = [], 0
        start, cpu = time.perf_counter(), os.times()
        for i in range(SYNCS):
            began = time.perf_counter()
            end = (i + 1) * SIZE
            if mode == "zero-ahead" and end + CHUNK // 4 > zeroed:
                zeroed = -(-(end + CHUNK // 4) // CHUNK) * CHUNK
                os.pwrite(fd, data + b"\0" * (zeroed - end), i * SIZE)
            else:
                os.pwrite(fd, data, i * SIZE)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - began)
        elapsed, system = time.perf_counter() - start, os.times().system - cpu.system
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    pct = lambda p: latencies[min(SYNCS - 1, int(SYNCS * p))] * 1e3
    print(f"{mode:<12} {SYNCS / elapsed:9.0f} {pct(0.5):9.3f} {pct(0.99):9.3f} "
          f"{pct(0.999):9.3f} {system / SYNCS * 1e6:9.0f}", flush=True)


print(f"{'file':<12} {'syncs/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9} {'sys us':>9}")
for _ in range(2):
    for mode in ("allocated", "zero-filled", "zero-ahead"):
        run(mode)
