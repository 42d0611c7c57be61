#!/usr/bin/env python
"""Load for bench/scale.py, run as its own process: like bench/_load.py, but each line of the
bodies file is `PATH<TAB>BODY`, so one run spreads over many experiments.

    python bench/_scale_load.py BASE_URL --bodies FILE [--connections N] [--warmup S] [--duration S]

Prints one JSON object: requests, ok, statuses, errors, window_s, rps, p50/p99 (ms)."""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from urllib.parse import urlsplit

from _load import read_response


async def run(args: argparse.Namespace, lines: list[tuple[str, bytes]]) -> dict:
    url = urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    bodies = itertools.cycle(lines)
    start = time.perf_counter()
    warm_end, end = start + args.warmup, start + args.warmup + args.duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < end:
                path, body = next(bodies)
                head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                t0 = time.perf_counter()
                writer.write(head + body)
                try:
                    status, _ = await read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                t1 = time.perf_counter()
                if warm_end <= t1 <= end:
                    latencies.append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(args.connections)))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3 if latencies else float("nan")

    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {"requests": len(latencies), "ok": ok, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "errors": errors, "window_s": args.duration, "rps": ok / args.duration,
            "p50_ms": pct(50), "p99_ms": pct(99)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--bodies", required=True)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=10.0)
    args = p.parse_args()
    with open(args.bodies, "rb") as fh:
        lines = [tuple(line.rstrip(b"\n").split(b"\t", 1)) for line in fh if line.strip()]
    json.dump(asyncio.run(run(args, [(path.decode(), body) for path, body in lines])), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
