#!/usr/bin/env python
"""A small HTTP/1.1 load client for bench/serving.py, run as its own process.

    python bench/_load.py URL --bodies FILE [--repeat] [--paths] [--connections N]
                          [--warmup S] [--duration S] [--count-field NAME]

Each of N keep-alive connections POSTs bodies taken in order from FILE (one JSON body per line):
every line once, or over and over with --repeat. Requests that complete in the first S seconds
(the warm-up) are dropped; those that complete in the following --duration seconds are measured.
The run ends at the end of that window or when the bodies run out (then the window ends at the
last completion). With --count-field, the named integer field of each measured JSON response is
summed (e.g. `accepted` of a batch reward answer). With --paths each line is `PATH<TAB>BODY`
and goes to that path of URL's server, so one run spreads over many experiments (bench/scale.py).
Prints one JSON object on stdout.

Plain asyncio streams, no HTTP library: the client must cost the 2-core machine as little as
possible. It is also the fallback when wrk is not installed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


class Bodies:
    def __init__(self, lines: list[bytes], repeat: bool):
        self.lines = lines
        self.repeat = repeat
        self.i = 0

    def next(self) -> bytes | None:
        if self.i >= len(self.lines):
            if not self.repeat or not self.lines:
                return None
            self.i = 0
        body = self.lines[self.i]
        self.i += 1
        return body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed by the server")
    status = int(status_line.split(b" ", 2)[1])
    length = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        return status, b"".join(parts)
    return status, (await reader.readexactly(length)) if length else b""


async def run(args: argparse.Namespace, lines: list[bytes]) -> dict:
    url = urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    path = url.path + (f"?{url.query}" if url.query else "")
    bodies = Bodies(lines, args.repeat)
    head = (
        f"POST %s HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\n\r\n"
    )
    start = time.perf_counter()
    warm_end = start + args.warmup
    end = warm_end + args.duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counted = 0
    errors = 0
    last_done = warm_end

    async def connection() -> None:
        nonlocal counted, errors, last_done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < end:
                body = bodies.next()
                if body is None:
                    return
                to = path
                if args.paths:
                    raw_path, _, body = body.partition(b"\t")
                    to = raw_path.decode()
                t0 = time.perf_counter()
                writer.write((head % (to, len(body))).encode() + body)
                try:
                    status, payload = await read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                t1 = time.perf_counter()
                if warm_end <= t1 <= end:
                    latencies.append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1
                    last_done = max(last_done, t1)
                    if args.count_field and status == 200:
                        counted += int(json.loads(payload).get(args.count_field, 0))
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(args.connections)))
    window = (end if time.perf_counter() >= end else last_done) - warm_end
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3

    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "requests": len(latencies),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "window_s": window,
        "rps": ok / window if window > 0 else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "counted": counted if args.count_field else None,
        "counted_per_s": counted / window if args.count_field and window > 0 else None,
        "bodies_left": max(0, len(lines) - bodies.i) if not args.repeat else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--bodies", required=True, help="file with one request body per line")
    p.add_argument("--repeat", action="store_true", help="cycle through the bodies")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--count-field", default=None)
    p.add_argument("--paths", action="store_true", help="each line is PATH<TAB>BODY")
    args = p.parse_args(argv)
    with open(args.bodies, "rb") as fh:
        lines = [line.rstrip(b"\n") for line in fh if line.strip()]
    result = asyncio.run(run(args, lines))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
