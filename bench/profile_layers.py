"""Where a process's time goes, by layer, from py-spy's raw (collapsed) stacks.

Usage::

    python bench/profile_layers.py NAME=STACKS.txt [NAME=STACKS.txt ...] [--per-request-ms N,N,...]

Each sample is charged to the layer of its deepest frame that belongs to a layer; frames of
generic code (numpy, json, asyncio, the standard library) are charged to whoever called them, so
numpy under scikit-learn is the model and numpy under the bandit is the gateway's routing. The
layers are those of issue 19: the HTTP edge, Ray Serve, the gateway's own code (routing, the
data plane, schemas), the Redis client (redis-py and the gateway's store), the model, telemetry;
plus Ray's core and the event loop itself. Prints one Markdown table with a column per file
(share of its samples; with --per-request-ms, that share of the given CPU milliseconds per
request instead). `bench/serving.py --profile DIR` writes such stacks.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

# (pattern on a frame's file path, layer); the first match wins, so specific before general.
LAYERS: tuple[tuple[str, str], ...] = (
    ("/gateway/telemetry/", "telemetry"),
    ("opentelemetry/", "telemetry"),
    ("/gateway/store/", "Redis client (redis-py, gateway/store)"),
    ("redis/", "Redis client (redis-py, gateway/store)"),
    ("/gateway/api/", "HTTP edge (starlette, gateway/api)"),
    ("starlette/", "HTTP edge (starlette, gateway/api)"),
    ("uvicorn/", "HTTP edge (starlette, gateway/api)"),
    ("httptools/", "HTTP edge (starlette, gateway/api)"),
    ("h11/", "HTTP edge (starlette, gateway/api)"),
    ("grpc/", "HTTP edge (starlette, gateway/api)"),
    ("/gateway/serving/variant", "model (sklearn, xgboost, batching)"),
    ("/gateway/serving/microbatch", "model (sklearn, xgboost, batching)"),
    ("/gateway/learning/artifacts", "model (sklearn, xgboost, batching)"),
    ("sklearn/", "model (sklearn, xgboost, batching)"),
    ("xgboost/", "model (sklearn, xgboost, batching)"),
    ("/gateway/", "gateway code (routing, data plane, schemas)"),
    ("ray/serve/", "Ray Serve"),
    ("ray/", "Ray core"),
)
LOOP = "event loop and other"
FRAME_FILE = re.compile(r"\(([^()]*?):\d+\)$")


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        m = FRAME_FILE.search(frame)
        path = m.group(1) if m else frame
        for pattern, layer in LAYERS:
            if pattern in path or (pattern.startswith("/gateway/") and path.startswith(pattern[1:])):
                return layer
    return LOOP


def by_layer(path: Path) -> dict[str, float]:
    """Share of the samples per layer (summing to 1)."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        layer = layer_of(stack.split(";"))
        counts[layer] = counts.get(layer, 0) + int(count)
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="NAME=PATH of py-spy raw stacks")
    ap.add_argument("--per-request-ms", help="CPU ms per request for each file, comma-separated")
    args = ap.parse_args()
    named = [f.split("=", 1) if "=" in f else (Path(f).stem, f) for f in args.files]
    shares = {name: by_layer(Path(p)) for name, p in named}
    scale = [float(x) for x in args.per_request_ms.split(",")] if args.per_request_ms else None
    layers = sorted({k for s in shares.values() for k in s}, key=lambda k: -max(s.get(k, 0) for s in shares.values()))
    unit = "ms of CPU per request" if scale else "share of samples"
    print(f"| Layer ({unit}) | " + " | ".join(name for name, _ in named) + " |")
    print("| --- |" + " ---: |" * len(named))
    for layer in layers:
        cells = []
        for i, (name, _) in enumerate(named):
            v = shares[name].get(layer, 0.0)
            cells.append(f"{v * scale[i]:.3f}" if scale else f"{v:.1%}")
        print(f"| {layer} | " + " | ".join(cells) + " |")
    if scale:
        print("| total | " + " | ".join(f"{s:.3f}" for s in scale) + " |")


if __name__ == "__main__":
    main()
