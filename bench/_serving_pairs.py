"""Configurations compared inside one gateway: each policy served as an experiment of its own by
the same processes, the load alternating between them in windows (A B, B A, ...).

Why: a gateway started again answers 10-20% faster or slower than the one before (where its
processes land on the two cores; bench/README.md, round 7), which swamps a 5% difference between
two configurations each measured in a gateway of its own. Inside one gateway that cancels in
every pair of windows. What it cannot see is what only a whole process pays (a model loaded but
never called), which the separate-gateway rounds still measure."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

from _systems import EXPERIMENT, log


def policy_folder(work: Path, name: str, policies: dict[str, str], base: str) -> tuple[Path, dict[str, str]]:
    """A folder of the policies (label -> policy file), each its own experiment (`base` keeps the
    bench's experiment name, which the start-up check asks), models from the work folder; and
    each label's experiment."""
    folder = work / f"pair-{name}"
    folder.mkdir(exist_ok=True)
    if not (folder / "models").exists():
        (folder / "models").symlink_to(work / "models", target_is_directory=True)
    experiments = {}
    for k, (label, path) in enumerate(policies.items()):
        doc = yaml.safe_load(Path(path).read_text())
        doc["experiment"] = experiments[label] = EXPERIMENT if label == base else f"{EXPERIMENT}-{k}"
        (folder / f"{k}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder, experiments


def ratio_summary(pairs: list[dict[str, float]], label: str, base: str) -> dict[str, Any]:
    ratios = sorted(p[label] / p[base] for p in pairs if p.get(label) and p.get(base))
    if not ratios:
        return {"median_ratio": None}
    return {"median_ratio": round(statistics.median(ratios), 3), "min_ratio": round(ratios[0], 3),
            "max_ratio": round(ratios[-1], 3), "pairs": len(ratios),
            # The pooled ratio: total of the label's figure over the base's, all pairs.
            "pooled_ratio": round(sum(p[label] for p in pairs) / sum(p[base] for p in pairs), 3)}


def paired_windows(run: Any, name: str, policies: dict[str, str], base: str, body: Path, *, starts: int,
                   pairs: int, connections: int = 16, per_line: bool = False,
                   check: tuple[bytes, int | None] | None = None, env: dict | None = None) -> dict[str, Any]:
    """Throughput and CPU per request of every label / `base`'s in the same gateway: `starts`
    gateways, `pairs` rounds of one window each per label, the order alternating. `run`:
    serving.py's Run (its gateway(), loader and stop()); `env`: the gateways' (another checkout's code)."""
    folder, experiments = policy_folder(run.work, name, policies, base)
    labels = list(policies)
    others = [label for label in labels if label != base]
    rounds: list[dict[str, float]] = []
    for s in range(starts):
        proc, info = run.gateway(f"gateway-{name}-pairs-{s}", str(folder), check=check, env=env)
        try:
            for p in range(pairs):
                figures: dict[str, float] = {}
                for label in labels if (s * pairs + p) % 2 == 0 else labels[::-1]:
                    url = f"{info['url']}/v2/models/{experiments[label]}/infer"
                    point = run.loader.run(url, body, connections, proc=proc, per_line=per_line)
                    run.points[f"{name}_pairs_{label}_start{s}_pair{p}"] = point
                    figures[label] = point["rps"]
                    cpu = point.get("cpu_ms_per_request", {}).get("total")
                    if cpu:
                        figures[f"{label}_cpu_ms"] = cpu
                rounds.append(figures)
                log(f"  {name} start {s} pair {p}: " + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items()))
            if run.args.profile and s == 0:
                # Each label once more under py-spy, in this same gateway: the profiles diff cleanly.
                from _serving_probes import gateway_targets, spying

                for label in labels:
                    url = f"{info['url']}/v2/models/{experiments[label]}/infer"
                    summary = run.results.setdefault(f"{name}_pairs_profile", {}).setdefault(label, {})
                    with spying(gateway_targets(proc), run.loader.measure, Path(run.args.profile),
                                f"{name}-pairs-{label}", summary):
                        summary["load"] = run.loader.run(url, body, connections, warm=False, proc=proc,
                                                         per_line=per_line)
        finally:
            run.stop(proc)
    out: dict[str, Any] = {"starts": starts, "pairs_per_start": pairs, "rounds": rounds}
    for label in others:
        out[label] = {"rps": ratio_summary(rounds, label, base),
                      "cpu_ms": ratio_summary([{k: r.get(f"{k}_cpu_ms") for k in (label, base)} for r in rounds],
                                              label, base)}
        log(f"  {name}, same gateway, {label} / {base}: throughput {out[label]['rps']}, CPU per request "
            f"{out[label]['cpu_ms']}")
    return out
