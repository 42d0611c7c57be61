"""bench/serving.py's `aggregates` section (issue 20): what per-unit aggregates cost serving.

The same gateway and model as the `gateway` section, three ways, each request carrying a unit_id
drawn (seeded, uniformly) from a pool of --aggregates-units units:

  off    the policy without aggregates (the unit_id only makes the assignment sticky);
  on     the policy plus an `aggregates` block (the unit's past requests and its mean label):
         every request reads the unit's counters, is served and logged with them, and counts
         its unit when recorded (record.lua); the variant takes none of them;
  used   the same aggregates, and the variant a logistic regression trained by the bootstrap
         recipe on the policy's features plus `visits` (the unit's past requests), so the read
         is needed before the model can answer.

In alternating rounds (--aggregates-rounds, default 3; the order reversed every other round):
p50 at 1 connection and throughput at 16 per configuration, each round's ratio to its own
`off`, median and range; and the CPU time the Router replica (the ingress replica, which also
runs the model) spent per request at 16 connections, same ratios. --aggregates-baseline DIR adds
`on` and `used` with another checkout's code (its src first on the gateway's path) to each round.
With --profile DIR, py-spy records the Router during an extra 16-connection run of round 0.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from _serving_probes import gateway_targets, spying
from _serving_sections import round_ratios
from _systems import EXPERIMENT, ROOT, log, oip_body

AGGREGATES = {"window_s": 86_400, "features": [{"name": "visits", "kind": "count"},
                                               {"name": "churn_rate", "kind": "mean_label"}]}
BODY_LINES = 40_000  # more than a 16-connection load point sends, so a unit's requests spread out
ROUTER = "ingress replica"


def prepare(work: Path, one_policy: str) -> dict[str, str]:
    """The `on` and `used` policy files beside `one_policy`'s (its models included), the `used`
    variant trained by the bootstrap recipe (aggregates are missing in a bootstrap, NaN)."""
    from gateway.learning.bootstrap import resolve_artifacts
    from gateway.policy import load_policy_file

    one = yaml.safe_load(Path(one_policy).read_text())
    base = [f["name"] for f in one["features"]]
    on = {**one, "aggregates": AGGREGATES}
    used = {**on, "variants": [{"name": "logreg", "model": "models/churn-logreg-visits.skops",
                                "train": "logistic_regression", "features": [*base, "visits"]}]}
    paths = {"off": one_policy}
    for name, doc in (("on", on), ("used", used)):
        path = work / f"policy-aggregates-{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        resolve_artifacts(load_policy_file(path), path, work)
        paths[name] = str(path)
    return paths


def write_bodies(path: Path, units: int, lines: int, seed: int = 20) -> bytes:
    """One OIP body a line, each with a unit_id from the pool; returns the first (to check with)."""
    rng = random.Random(seed)
    body = oip_body()
    out = []
    for _ in range(lines):
        out.append(json.dumps({**body, "parameters": {"unit_id": f"u{rng.randrange(units)}"}}, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n")
    return out[0].encode()


def section_aggregates(self: Any) -> None:
    """`self`: serving.py's Run (its gateway(), loader, points and results)."""
    policies = prepare(self.work, self.models["one"]["policy"])
    bodies = self.work / "bodies-units.jsonl"
    first = write_bodies(bodies, self.args.aggregates_units, BODY_LINES)
    here = {"PYTHONPATH": str(ROOT / "src")}
    configs: list[tuple[str, str, dict]] = [("off", "off", here), ("on", "on", here), ("used", "used", here)]
    there = {"PYTHONPATH": str(Path(self.args.aggregates_baseline or ROOT) / "src")}
    if self.args.aggregates_baseline:
        configs += [("on_baseline", "on", there), ("used_baseline", "used", there)]
    rounds: list[dict[str, float]] = []
    for r in range(self.args.aggregates_rounds):
        figures: dict[str, float] = {}
        for label, policy, env in (configs if r % 2 == 0 else configs[::-1]):
            # The `used` model's label on this row need not be the plain model's: any label goes.
            check = (first, self.expected_label if policy != "used" else None)
            proc, info = self.gateway(f"gateway-aggregates-{label}-{r}", policies[policy], env=env, check=check)
            try:
                url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                c1 = self.loader.run(url, bodies, 1, proc=proc, per_line=True)
                c16 = self.loader.run(url, bodies, 16, proc=proc, per_line=True)
                if self.args.profile and r == 0:
                    # py-spy of the Router (and the proxy) over an extra 16-connection run.
                    profiles = self.results.setdefault("aggregates_profile", {})
                    with spying(gateway_targets(proc), self.loader.measure, Path(self.args.profile),
                                f"aggregates-{label}-c16", profiles.setdefault(label, {})):
                        self.loader.run(url, bodies, 16, warm=False, proc=proc, per_line=True)
            finally:
                self.stop(proc)
            self.points[f"aggregates_{label}_round{r}_c1"] = c1
            self.points[f"aggregates_{label}_round{r}_c16"] = c16
            figures[f"{label}_rps_c16"] = c16["rps"]
            figures[f"{label}_p50_c1"] = c1["p50_ms"]
            figures[f"{label}_router_cpu_ms_c16"] = c16.get("cpu_ms_per_request", {}).get(ROUTER)
        rounds.append(figures)
        log(f"  round {r}: " + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items() if v is not None))
    labels = tuple(label for label, _, _ in configs if label != "off")

    def by(suffix: str) -> dict[str, Any]:
        return round_ratios([{k[: -len(suffix)]: v for k, v in f.items() if k.endswith(suffix)} for f in rounds],
                            labels, "off")

    self.results["aggregates"] = {"units": self.args.aggregates_units, "rps_c16": by("_rps_c16"),
                                  "p50_c1": by("_p50_c1"), "router_cpu_ms_c16": by("_router_cpu_ms_c16")}
    if self.args.pair_starts:
        from _serving_pairs import paired_windows

        for suffix, env in [("", here)] + ([("_baseline", there)] if self.args.aggregates_baseline else []):
            self.results["aggregates"][f"same_gateway{suffix}"] = paired_windows(
                self, f"aggregates{suffix}", {label: policies[label] for label in ("off", "on", "used")}, "off",
                bodies, starts=self.args.pair_starts, pairs=self.args.pairs, per_line=True, check=(first, None), env=env)
    for figure in ("rps_c16", "p50_c1", "router_cpu_ms_c16"):
        log(f"  {figure} / off: " + ", ".join(
            f"{label} {v['median_ratio']} [{v['min_ratio']}, {v['max_ratio']}]"
            for label, v in self.results["aggregates"][figure].items() if label in labels))
