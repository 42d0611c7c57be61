#!/usr/bin/env python
"""Serving benchmark: the gateway against bare Ray Serve and MLServer, on one model and one row.

Usage::

    python bench/serving.py [--json PATH] [--only SECTIONS] [--warmup S] [--measure S]
                            [--profile DIR] [--no-readme] [--cache-dir DIR]

Every system is started here, one after the other (never two at once on a 2-core machine), each
in its own process group and its own Ray instance, and stopped again (also on error). Load comes
from another process: wrk (Debian's `wrk`, installed with apt-get when missing and possible)
with bench/serving_post.lua, or bench/_load.py when wrk cannot be had; the batch-reward load is
always bench/_load.py (each body is different). Every load point runs a warm-up that is
dropped (--warmup, 3 s) and then the measured run (--measure, 8 s).

The model: the churn policy of tests/policies/churn.yaml reduced to its logistic-regression
variant (trained by the gateway's own bootstrap recipe into a work directory), so that the
gateway, bare Ray Serve and MLServer serve the same scikit-learn pipeline on the same row.

Sections (--only takes a comma-separated subset; the default runs all of them):

gateway   The gateway in its default configuration (LocalGateway: embedded Redis, Ray, Serve
          in throughput-optimised mode with HAProxy on the port forwarding to the Router
          replica's direct ingress, the variant's model inside the Router replica (placement
          `router`), tracing off). POST
          /v2/models/churn/infer (OIP, one tensor per feature) at 1 and 16 connections. Redis
          work per predict: `INFO commandstats` (every command, those inside scripts included)
          around the 16-connection run, minus the background rate (posterior refresh every
          100 ms, dashboard series every 2 s) measured while idle, over the predictions recorded
          meanwhile (the variants' `:req` counters); round trips: MONITOR separates the commands
          clients send from those scripts run, over a short extra run against an idle window of
          the same length. Then the batch reward endpoint (POST /v1/rewards, 1,000 items a
          request, 4 connections, for predictions recorded beforehand through the store's own
          `record_prediction` calls and tokens signed with the gateway's key), then the store's
          update path (ExperimentStore.apply_rewards in batches of 1,000, one client) against
          `redis-benchmark` sending the same EVALSHA the store sends, on the same embedded Redis
          (random keys from a keyspace 10x the calls, so ~95% take the accepted path).
traced    The same gateway with OTLP/HTTP trace export to a local sink (a tiny HTTP server
          that accepts POST /v1/traces and counts the spans), every request sampled, against
          the untraced gateway in alternating rounds (--traced-rounds, default 3): throughput
          at 16 connections and p50 at 1, each round's ratio to its own untraced run, median
          and range. --traced-baseline DIR adds another checkout's code, traced, to each round.
bare      Bare Ray Serve: an ingress deployment (a plain `__call__`, decoding the same OIP body)
          calling a model deployment that loads the same skops artifact with
          gateway.learning.artifacts.load_model; same replica counts, num_cpus=0 and
          max_ongoing_requests=200 as the gateway's deployments, and the same Serve environment
          as the gateway's default (gateway.serving.ingress.serve_environment). Measured through
          the gateway's ingress path (HAProxy) and, beside it, through the ingress replica's
          own HTTP port (direct ingress, the fastest path Serve offers).
mlserver  MLServer 1.7.1 with mlserver-sklearn, in its own venv under --cache-dir (created when
          missing), serving the same pipeline saved with joblib, OIP REST; the body is the
          encoded [1, 6] FP64 row (its sklearn runtime takes the model's input matrix).
scaling   The gateway redeployed (serve.run on its running Serve instance) with 2 Router
          replicas; then with placement `deployment` (the variant in a deployment of its own:
          the bare chain's shape) at 1 and 16 connections, and with 2 replicas of the variant;
          then 1/1 with the default placement again. 1/1 is the `gateway` section's figure.
shadow    The gateway with XGBoost as a shadow variant of the logistic regression, copied 10% and
          100% of the requests, against none: throughput at 16 connections, alternating rounds
          (--shadow-rounds, default 3), each round's ratio to its own 'none', median and range;
          the same for the CPU time per request of all the gateway's processes, gross and net
          of the background rate measured idle (6 s) before the load, and for the throughput
          that net cost projects on 2 cores (what the background leaves / net). --shadow-fractions
          picks the fractions (0.1,1.0); --shadow-baseline DIR adds another checkout's code.
          With --profile, an extra run of each shadowed gateway under py-spy: the share of the
          Router's samples in shadow work (the mirror, its store calls, XGBoost). Then, as the
          section's figure, every configuration served side by side by one gateway (its own
          experiment each), the load alternating between them in windows: --pairs pairs in each
          of --pair-starts gateways (_serving_pairs.py), the median of the pairs' ratios, its
          range and the pooled ratio; a restarted gateway's speed varies more than the effect.
memory    The gateway with a 4-variant policy (logistic regression, XGBoost, histogram
          gradient boosting, a second logistic regression; all trained by the bootstrap
          recipe): RSS (and PSS) summed over every process of the system (the driver, Ray's
          processes and workers, redis-server) after a 16-connection run.
aggregates  Per-unit aggregates' serving cost (issue 20; _serving_aggregates.py): the gateway
          without aggregates, with an aggregates block, and with a variant that takes one (the
          unit's past requests), requests carrying a unit_id from a pool of --aggregates-units
          (10,000), in alternating rounds (--aggregates-rounds, default 3): p50 at 1 connection,
          throughput and the Router's CPU per request at 16, each round's ratio to its own
          'off', median and range. --aggregates-baseline DIR adds another checkout's code.
          Then off, on and used side by side in one gateway, as the shadow section's pairs.
headline  The gateway, the bare Ray Serve chain and MLServer at parallel_workers 1 and 0, all
          running for the whole section, loaded in turn at 1, 16 and 64 connections in
          alternating rounds (--headline-rounds, default 3; _serving_headline.py): the median
          of the per-round ratios to MLServer's better setting at each load and to the bare
          chain, with the smallest and largest.

Every load point also records the CPU time each kind of process spent per request (psutil),
which a shared machine distorts far less than latency. --profile DIR additionally records
py-spy (raw collapsed stacks) of the Router replica (which, with the default placement, also
runs the model; variant replicas exist only with placement `deployment`) and Serve's proxy
actor during an extra 16-connection run of the default gateway, and of the Router during the reward
run, and prints where their samples go.

The JSON (--json) holds the headline figures (gateway_rps, bare_rps, mlserver_rps,
throughput_ratio_vs_bare, throughput_ratio_vs_mlserver, added_p50_ms, p99_ratio_vs_bare,
redis_roundtrips_per_predict, rewards_per_s, tracing_p50_ratio, rss_mib, ...), every goal with
its verdict, and every raw load point. A full run writes its table into bench/README.md between
<!-- serving:start --> and <!-- serving:end -->.
"""
from __future__ import annotations

# The code is split by what it does (each module's docstring says what it holds):
#   _systems.py           starting and stopping the systems, the MLServer venv, tools, models
#   _roles.py             what runs inside the children (`--role`): gateway, bare Ray Serve, sink
#   _serving_load.py      load points with wrk or bench/_load.py, and their figures
#   _serving_redis.py     Redis work per predict, the reward load, store vs redis-benchmark
#   _serving_probes.py    memory, CPU per request and py-spy profiles of a system's processes
#   _serving_sections.py  one method per section (system)
#   _serving_report.py    the machine, the summary and goals, the table, bench/README.md
# This file: the command line and the order of the sections.

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from _roles import ROLES
from _serving_report import README, machine, render_table, summarize, write_readme
from _serving_sections import Sections
from _systems import encoded_row, ensure_tools, log, prepare_models

SECTIONS = ("gateway", "traced", "bare", "mlserver", "scaling", "memory", "shadow", "aggregates", "headline")


class Run(Sections):
    """The sections in the order --only names them (scaling on the gateway section's system when
    both run), one failing without losing the others' figures; then the summary."""

    def execute(self) -> dict:
        started = time.perf_counter()
        self.results["tools"] = ensure_tools()
        if not self.results["tools"]["wrk"]:
            log("wrk is not available: load comes from bench/_load.py")
            self.loader.wrk = None
        self.results["machine"] = machine()
        log(f"work dir {self.work}; training the models")
        self.models = prepare_models(self.work, Path(self.args.cache_dir))
        self.encoded = encoded_row(self.models["features"])
        from gateway.learning import artifacts

        a = self.models["one"]["artifacts"]["logreg"]
        import numpy as np

        self.expected_label = int(artifacts.predict(artifacts.load_model(a["path"], a["sha256"]),
                                                    np.array([self.encoded]))[0][0])
        errors = {}
        self.scaling_error = None
        for section in self.args.only:
            if section == "scaling" and "gateway" in self.args.only:
                continue  # measured on the gateway section's system, redeployed
            t0 = time.perf_counter()
            try:
                getattr(self, f"section_{section}")()
            except Exception as err:  # noqa: BLE001 - one system failing must not lose the others' figures
                import traceback

                errors[section] = f"{type(err).__name__}: {err}"
                log(f"section {section} failed: {traceback.format_exc()}")
            self.results.setdefault("section_seconds", {})[section] = round(time.perf_counter() - t0, 1)
        if self.scaling_error:
            errors["scaling"] = self.scaling_error
        self.results["errors"] = errors
        self.results["wall_s"] = round(time.perf_counter() - started, 1)
        return summarize(self)


# =============================================================================================


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up dropped before each load point")
    p.add_argument("--measure", type=float, default=8.0, help="seconds measured per load point")
    p.add_argument("--reward-records", type=int, default=120_000, help="served requests prepared for rewards")
    p.add_argument("--store-calls", type=int, default=60_000, help="rewards for the store / redis-benchmark run")
    p.add_argument("--shadow-rounds", type=int, default=3, help="alternating rounds of the shadow section")
    p.add_argument("--shadow-fractions", default="0.1,1.0", help="the shadow section's fractions (of 0.1,1.0)")
    p.add_argument("--shadow-baseline", help="a checkout whose code the shadow section also measures")
    p.add_argument("--headline-rounds", type=int, default=3, help="alternating rounds of the headline section")
    p.add_argument("--traced-rounds", type=int, default=3, help="alternating rounds of the traced section")
    p.add_argument("--traced-baseline", help="a checkout whose code the traced section also measures, traced")
    p.add_argument("--aggregates-rounds", type=int, default=3, help="alternating rounds of the aggregates section")
    p.add_argument("--pair-starts", type=int, default=2,
                   help="shadow and aggregates: gateways serving every configuration side by side (0: none)")
    p.add_argument("--pairs", type=int, default=5, help="alternating pairs of windows in each of those gateways")
    p.add_argument("--aggregates-units", type=int, default=10_000, help="the pool of unit_ids of the aggregates section")
    p.add_argument("--aggregates-baseline", help="a checkout whose code the aggregates section also measures")
    p.add_argument("--profile", help="record py-spy stacks of the router, variant and proxy into this folder")
    p.add_argument("--cache-dir", default=os.environ.get("GATEWAY_BENCH_CACHE", "/tmp/gateway-bench-cache"),
                   help="where the MLServer venv is kept")
    p.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    p.add_argument("--keep-work", action="store_true", help="keep the work dir (logs, state)")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        ROLES[args.role](json.loads(Path(args.spec).read_text()))
        return 0
    args.argv = argv
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    run = Run(args)
    log(f"sections: {', '.join(args.only)}")
    try:
        summary = run.execute()
    finally:
        if not args.keep_work:
            shutil.rmtree(run.work, ignore_errors=True)
        else:
            log(f"work dir kept: {run.work}")
    table = render_table(summary)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        log(f"wrote {args.json}")
    full = set(args.only) == set(SECTIONS) and not args.profile
    if not args.no_readme and full:
        write_readme(table)
        log(f"wrote the table into {README}")
    log(f"wall time {summary['details']['wall_s']} s")
    return 1 if summary["details"].get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
