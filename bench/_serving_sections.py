"""The sections of bench/serving.py, one method each (`section_gateway`, `section_traced`,
`section_bare`, `section_mlserver`, `section_scaling`, `section_memory`; `section_aggregates` and
`section_headline` in modules of their own): each starts its system, checks its answer against
the model's own, runs its load points and records them in `self.points` and its other figures
in `self.results`, and stops the system again (also on error). `Sections` also holds the run's
state (the work dir, the OIP body, the loader); the order of the sections and the summary are serving.py's `Run`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _serving_load import Loader
from _serving_probes import cpu_per_request, cpu_snapshot, profile_run, system_memory
from _serving_redis import measure_redis_per_predict, measure_rewards, measure_store_vs_redis_benchmark, redis_client
from _systems import (
    EXPERIMENT,
    Proc,
    _write_ready,
    check_answer,
    ensure_mlserver_venv,
    free_port,
    free_port_range,
    http,
    log,
    oip_body,
    start_mlserver,
    start_role,
    wait_http,
    with_retry,
    write_mlserver_model,
)


def round_ratios(rounds: list[dict[str, float]], labels: tuple[str, ...], base: str) -> dict[str, Any]:
    """Per label, the median over rounds of its figure / the same round's `base`, with the
    smallest and largest ratio (each round's own baseline, so drift of the machine cancels)."""
    import statistics

    out: dict[str, Any] = {"rounds": rounds}
    for label in labels:
        ratios = [r[label] / r[base] for r in rounds if (r.get(label) or 0) > 0 and (r.get(base) or 0) > 0]
        out[label] = {"median_ratio": round(statistics.median(ratios), 3) if ratios else None,
                      "min_ratio": round(min(ratios), 3) if ratios else None,
                      "max_ratio": round(max(ratios), 3) if ratios else None}
    return out


# Seconds each shadow configuration is watched idle before its load: its background CPU rate.
SHADOW_IDLE_S = 6.0


def idle_cpu_ms_per_s(proc, seconds: float) -> float:
    """CPU milliseconds a second that all the system's processes spend with no load."""
    before, t0 = cpu_snapshot(proc), time.perf_counter()
    time.sleep(seconds)
    spent = cpu_per_request(before, cpu_snapshot(proc), 1)["total"]
    return spent / (time.perf_counter() - t0)


# Frames of the shadow's own work in the Router: the mirror and its store calls, the shadow model.
SHADOW_FRAMES = ("gateway/dataplane/shadow.py", "gateway/store/shadow.py", "xgboost/")


def shadow_share(raw_stacks: Path) -> float | None:
    """The share of a py-spy raw profile's samples (active ones only) inside shadow work: on the
    same run as the rest, so a contended machine slows both alike."""
    total = shadow = 0
    if not raw_stacks.exists():
        return None
    for line in raw_stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            total += int(count)
            shadow += int(count) if any(f in stack for f in SHADOW_FRAMES) else 0
    return round(shadow / total, 4) if total else None


def shadow_summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Throughput and CPU per request ratios to 'none' (a baseline checkout's to its own 'none')."""
    import statistics

    out = round_ratios(rounds, ("fraction_0.1", "fraction_1.0"), "none")
    for base in ("none", "none_baseline"):
        suffix = base[len("none"):]
        labels = [f"fraction_{f}{suffix}" for f in ("0.1", "1.0")]
        if suffix:
            out.update({k: v for k, v in round_ratios(rounds, labels, base).items() if k != "rounds"})
        for label in labels:
            shares = [r[f"{label}_router_shadow_share"] for r in rounds if r.get(f"{label}_router_shadow_share") is not None]
            if shares:
                out[f"{label}_router_shadow_share"] = {"median": statistics.median(shares), "min": min(shares),
                                                        "max": max(shares)}
        for figure in ("cpu_ms", "net_cpu_ms", "projected_rps"):
            cpu = round_ratios(rounds, [f"{label}_{figure}" for label in labels], f"{base}_{figure}")
            out.update({k: v for k, v in cpu.items() if k != "rounds"})
    return out


class Sections:
    """The systems and their load points; `Run` (serving.py) orders them."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.loader = Loader(args.warmup, args.measure)
        self.results: dict[str, Any] = {}
        self.points: dict[str, dict] = {}
        self.work = Path(tempfile.mkdtemp(prefix="gw-bench-serving-"))
        (self.work / "logs").mkdir()
        self.body_file = self.work / "oip.json"
        self.body_file.write_text(json.dumps(oip_body(), separators=(",", ":")))
        self.expected_label: int | None = None

    # -- systems --------------------------------------------------------------------------------

    def gateway(self, name: str, policy: str, *, env: dict | None = None,
                check: tuple[bytes, int | None] | None = None, **spec: Any) -> tuple[Proc, dict]:
        """The gateway serving `policy`, ready and checked: `check` (body, expected label; the
        label None: any) when the default body and the model's own label do not apply."""
        body, label = check or (self.body_file.read_bytes(), self.expected_label)

        def start(attempt: int) -> tuple[Proc, dict]:
            state = self.work / f"state-{name}-{attempt}"
            port = free_port()
            proc, info = start_role("gateway", name, {"policy": policy, "state_dir": str(state), "port": port, **spec},
                                    self.work, env)
            try:
                wait_http(lambda: http("GET", f"{info['url']}/v2/health/ready")[0] == 200, name, 120, proc)
                check_answer(f"{info['url']}/v2/models/{EXPERIMENT}/infer", body, label)
                proc.processes()
            except BaseException:
                proc.stop()
                raise
            return proc, info

        log(f"starting {name}")
        t0 = time.perf_counter()
        proc, info = with_retry(name, start)
        log(f"  {name} ready in {time.perf_counter() - t0:.1f}s at {info['url']}")
        return proc, info

    def stop(self, proc: Proc, timeout: float = 60.0) -> None:
        t0 = time.perf_counter()
        proc.stop(timeout)
        log(f"  {proc.name} stopped in {time.perf_counter() - t0:.1f}s")

    # -- sections -------------------------------------------------------------------------------

    def section_gateway(self) -> None:
        proc, info = self.gateway("gateway", self.models["one"]["policy"])
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            self.points["gateway_c1"] = self.loader.run(url, self.body_file, 1, proc=proc)
            client = redis_client(info["redis_url"])
            try:
                redis_fig, point = measure_redis_per_predict(
                    client, info["redis_url"], self.loader, url, self.body_file, min(3.0, self.args.measure), proc
                )
                self.points["gateway_c16"] = point
                self.results["redis"] = redis_fig
                log(f"  redis: {redis_fig['roundtrips_per_predict']} client commands (round trips) a predict "
                    f"{redis_fig['client_commands_per_predict']}; all calls {redis_fig['calls_per_predict']}")
                self.results["memory_1_variant"] = system_memory(proc)
                if self.args.profile:
                    self.results["profile"] = profile_run(proc, self.loader, url, self.body_file, Path(self.args.profile))
                self.results["rewards"] = measure_rewards(
                    client, info["url"], self.work, min(2.0, self.args.warmup), self.args.measure,
                    self.args.reward_records, proc, self.args.profile,
                )
                self.results["store"] = measure_store_vs_redis_benchmark(
                    info["redis_url"], seconds=min(4.0, self.args.measure), calls=self.args.store_calls
                )
            finally:
                client.close()
            if "scaling" in self.args.only:
                t0 = time.perf_counter()
                try:
                    self.section_scaling(running=(proc, info))
                except Exception as err:  # noqa: BLE001 - reported with the other sections' errors
                    self.scaling_error = f"{type(err).__name__}: {err}"
                    log(f"section scaling failed: {self.scaling_error}")
                self.results.setdefault("section_seconds", {})["scaling"] = round(time.perf_counter() - t0, 1)
        finally:
            self.stop(proc)

    def section_traced(self) -> None:
        """Every request traced and exported over OTLP/HTTP to a local sink, against the same
        gateway untraced, in alternating rounds (off, on, [on with --traced-baseline's code], off,
        ...): throughput at 16 connections and p50 at 1, each round's ratio to its own 'off'."""
        sink, sink_info = start_role("sink", "otlp-sink", {"port": free_port()}, self.work)
        otlp = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink_info['url']}/v1/traces",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
        configs = [("off", {}), ("on", otlp)]
        if self.args.traced_baseline:
            # Another checkout's code (its src first on the path of the gateway and its replicas).
            configs.append(("on_baseline", {**otlp, "PYTHONPATH": str(Path(self.args.traced_baseline) / "src")}))
        rounds: list[dict[str, float]] = []
        try:
            for r in range(self.args.traced_rounds):
                figures: dict[str, float] = {}
                for label, env in (configs if r % 2 == 0 else configs[::-1]):
                    proc, info = self.gateway(f"gateway-traced-{label}-{r}", self.models["one"]["policy"], env=env)
                    try:
                        url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                        c1 = self.loader.run(url, self.body_file, 1, proc=proc)
                        c16 = self.loader.run(url, self.body_file, 16, proc=proc)
                    finally:
                        self.stop(proc)
                    self.points[f"traced_{label}_round{r}_c1"], self.points[f"traced_{label}_round{r}_c16"] = c1, c16
                    figures[f"{label}_rps_c16"], figures[f"{label}_p50_c1"] = c16["rps"], c1["p50_ms"]
                    if label == "on":
                        self.points["traced_c1"], self.points["traced_c16"] = c1, c16
                rounds.append(figures)
                log(f"  round {r}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()))
            status, raw = http("GET", f"{sink_info['url']}/stats")
            self.results["trace_sink"] = json.loads(raw) if status == 200 else {"error": status}
            log(f"  trace sink received {self.results['trace_sink']}")
        finally:
            sink.stop()
        on = [label for label, _ in configs if label != "off"]
        self.results["tracing"] = {
            "rps_c16": round_ratios([{k[: -len("_rps_c16")]: v for k, v in f.items() if k.endswith("_rps_c16")}
                                     for f in rounds], tuple(on), "off"),
            "p50_c1": round_ratios([{k[: -len("_p50_c1")]: v for k, v in f.items() if k.endswith("_p50_c1")}
                                    for f in rounds], tuple(on), "off"),
        }

    def bare_ingress_env(self, run_dir: Path) -> tuple[dict[str, str], int]:
        """The gateway's default ingress path for the bare chain (HAProxy in front of direct
        ingress, throughput-optimised Serve), and the first direct-ingress port."""
        from gateway.serving.ingress import prepare_ingress_files, serve_environment
        from gateway.settings import Settings

        env = serve_environment(Settings().ingress, "127.0.0.1", run_dir)
        prepare_ingress_files(env, "127.0.0.1", run_dir)  # the HAProxy bind wrapper the env names
        di_http = int(env.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", 0))
        if not env:
            di_http = free_port_range(20)
            env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(di_http),
                   "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(di_http + 19),
                   "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0"}
        return env, di_http

    def section_bare(self) -> None:
        from gateway.serving.ingress import stop_haproxy

        # The ingress replica's own port beside the gateway's path is the fastest Serve offers.
        run_dir = self.work / "bare-ingress"
        env, di_http = self.bare_ingress_env(run_dir)
        log(f"starting bare Ray Serve (ingress path: {'HAProxy + direct ingress' if 'RAY_SERVE_ENABLE_HA_PROXY' in env else 'proxy'})")
        t0 = time.perf_counter()
        artifact = self.models["one"]["artifacts"]["logreg"]
        body = self.body_file.read_bytes()

        def start(attempt: int) -> tuple[Proc, dict]:
            proc, info = start_role("bare", "bare", {"port": free_port(), "artifact": artifact,
                                                     "features": self.models["features"]}, self.work, env)
            try:
                url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                wait_http(lambda: http("POST", url, body)[0] == 200, "bare", 120, proc)
                check_answer(url, body, self.expected_label)
            except BaseException:
                proc.stop()
                raise
            return proc, info

        proc, info = with_retry("bare", start)
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            log(f"  bare ready in {time.perf_counter() - t0:.1f}s")
            direct = self._direct_port(proc, di_http)
            self.points["bare_c1"] = self.loader.run(url, self.body_file, 1, proc=proc)
            self.points["bare_c16"] = self.loader.run(url, self.body_file, 16, proc=proc)
            if direct:
                durl = f"http://127.0.0.1:{direct}/v2/models/{EXPERIMENT}/infer"
                check_answer(durl, body, self.expected_label)
                log(f"  direct ingress on port {direct}")
                self.points["bare_direct_c1"] = self.loader.run(durl, self.body_file, 1, proc=proc)
                self.points["bare_direct_c16"] = self.loader.run(durl, self.body_file, 16, proc=proc)
            else:
                log("  direct ingress port not found; skipped")
        finally:
            self.stop(proc)
            stop_haproxy(run_dir)

    def _direct_port(self, proc: Proc, base: int) -> int | None:
        import psutil

        pids = {p.pid for p in proc.processes()}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for c in psutil.net_connections(kind="tcp"):
                if (c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr
                        and base <= c.laddr.port < base + 20):
                    return c.laddr.port
            time.sleep(0.5)
            pids = {p.pid for p in proc.processes()}
        return None

    def section_mlserver(self) -> None:
        venv = ensure_mlserver_venv(Path(self.args.cache_dir))
        model_dir = self.work / "mlserver-model"
        write_mlserver_model(self.models["one"]["artifacts"]["logreg"], model_dir)
        body_file = self.work / "mlserver.json"
        body = {"inputs": [{"name": "input-0", "shape": [1, len(self.encoded)], "datatype": "FP64",
                            "data": [self.encoded]}]}
        body_file.write_text(json.dumps(body, separators=(",", ":")))
        log("starting MLServer")
        t0 = time.perf_counter()
        proc, url = start_mlserver(venv, model_dir, self.work)
        try:
            infer = f"{url}/v2/models/{EXPERIMENT}/infer"
            check_answer(infer, body_file.read_bytes(), self.expected_label)
            log(f"  mlserver ready in {time.perf_counter() - t0:.1f}s at {url}")
            self.points["mlserver_c1"] = self.loader.run(infer, body_file, 1, proc=proc)
            self.points["mlserver_c16"] = self.loader.run(infer, body_file, 16, proc=proc)
        finally:
            # MLServer 1.7.1 can hang in uvicorn's "Waiting for background tasks" after SIGTERM.
            self.stop(proc, timeout=10)

    def section_scaling(self, running: tuple[Proc, dict] | None = None) -> None:
        """Redeploys the running gateway (or a fresh one) with 2 Router replicas, then with 1
        Router and 2 replicas of the variant, and measures each at 16 connections."""
        proc, info = running or self.gateway("gateway-scaling", self.models["one"]["policy"])
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            if running is None:
                self.points["scaling_router1_variant1_c16"] = self.loader.run(url, self.body_file, 16, proc=proc)
            # Router replicas with the default placement (each replica predicts in process), then
            # placement `deployment` (the shape of the bare chain: router -> variant deployment)
            # with 1 and 2 variant replicas, then the default again.
            steps = [("scaling_router2", 2, 1, "router", (16,)),
                     ("gateway_deployment", 1, 1, "deployment", (1, 16)),
                     ("scaling_variant2", 1, 2, "deployment", (16,)),
                     ("scaling_back_to_1_1", 1, 1, "router", (16,))]
            for key, router, variant, placement, connections in steps:
                self.redeploy(proc, router, variant, placement)
                for c in connections:
                    point = self.loader.run(url, self.body_file, c, proc=proc)
                    point["replicas"] = {"router": router, "variant": variant, "placement": placement}
                    self.points[f"{key}_c{c}"] = point
        finally:
            if running is None:
                self.stop(proc)

    def redeploy(self, proc: Proc, router: int, variant: int, placement: str, timeout: float = 240) -> None:
        log(f"redeploying the gateway with {router} Router and {variant} variant replica(s), placement {placement}")
        t0 = time.perf_counter()
        ready = self.work / f"{proc.name}.ready.json"
        ack = Path(str(ready) + ".ack")
        ack.unlink(missing_ok=True)
        cmd_id = f"{router}-{variant}-{time.time()}"
        _write_ready(str(ready) + ".cmd", {"id": cmd_id, "router_replicas": router, "variant_replicas": variant,
                                           "placement": placement})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ack.exists() and json.loads(ack.read_text()).get("id") == cmd_id:
                break
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited during the redeploy:\n{proc.log_tail()}")
            time.sleep(0.25)
        else:
            raise RuntimeError(f"{proc.name}: no redeploy within {timeout:.0f}s")
        answer = json.loads(ack.read_text())
        if not answer["ok"]:
            raise RuntimeError(f"redeploy failed: {answer['error']}")
        proc.processes()
        info = json.loads(ready.read_text())
        wait_http(lambda: http("GET", f"{info['url']}/v2/health/ready")[0] == 200, proc.name, 120, proc)
        check_answer(f"{info['url']}/v2/models/{EXPERIMENT}/infer", self.body_file.read_bytes(), self.expected_label)
        log(f"  redeployed in {time.perf_counter() - t0:.1f}s")

    def section_shadow(self) -> None:
        """Throughput at 16 connections with XGBoost in shadow on 10% and on 100% of the requests
        (--shadow-fractions), against none, in alternating rounds (none, 10%, 100%, none, ...):
        each round's ratio to the round's own 'none', so that drift of the machine's speed
        cancels; and the same for the CPU time per request of all the gateway's processes, which
        a shared machine blurs far less (on a CPU-bound machine it sets the throughput).
        --shadow-baseline DIR runs every configuration again with another checkout's code."""
        policies = {"0.1": "shadow10", "1.0": "shadow100"}
        fractions = self.args.shadow_fractions.split(",")
        if set(fractions) - set(policies):
            raise SystemExit(f"--shadow-fractions takes {', '.join(policies)}, not {self.args.shadow_fractions}")
        configs = [("none", "one", {})] + [(f"fraction_{f}", policies[f], {}) for f in fractions]
        if self.args.shadow_baseline:
            # Another checkout's code (its src first on the path of the gateway and its replicas).
            env = {"PYTHONPATH": str(Path(self.args.shadow_baseline) / "src")}
            configs += [(f"{label}_baseline", policy, env) for label, policy, _ in configs]
        rounds: list[dict[str, float]] = []
        for r in range(self.args.shadow_rounds):
            figures = {}
            for label, policy, env in (configs if r % 2 == 0 else configs[::-1]):
                proc, info = self.gateway(f"gateway-shadow-{label}-{r}", self.models[policy]["policy"], env=env)
                try:
                    url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
                    idle = idle_cpu_ms_per_s(proc, SHADOW_IDLE_S)
                    point = self.loader.run(url, self.body_file, 16, proc=proc)
                    point["idle_cpu_ms_per_s"] = idle
                    self.points[f"shadow_{label}_round{r}_c16"] = point
                    figures[label] = point["rps"]
                    gross = point.get("cpu_ms_per_request", {}).get("total")
                    figures[f"{label}_cpu_ms"] = gross
                    if gross is not None and point.get("requests"):
                        # Less the background (upkeep, Ray) the window would have cost idle: what
                        # the requests themselves cost, however many a contended machine let in.
                        net = gross - idle * point["window_s"] / max(1, point["requests"])
                        figures[f"{label}_net_cpu_ms"] = round(net, 4)
                        figures[f"{label}_idle_cpu_ms_s"] = round(idle, 2)
                        # The throughput both cores would give: what the background leaves, over the net cost.
                        # (None when the idle estimate swallows the whole cost: a window too noisy to read.)
                        figures[f"{label}_projected_rps"] = round((2000 - idle) / net, 1) if net > 0 else None
                    if self.args.profile:
                        # After the measured run: py-spy's reads cost the target a little CPU.
                        # 'none' too: the whole loop thread's profile is diffed against it.
                        spied = profile_run(proc, self.loader, url, self.body_file, Path(self.args.profile) / f"shadow-{label}-{r}")
                        router = Path(self.args.profile) / f"shadow-{label}-{r}" / "predict-c16-router.txt"
                        share = figures[f"{label}_router_shadow_share"] = shadow_share(router)
                        log(f"  {label}: " + (f"{share:.2%}" if share is not None else "no profile") +
                            f" of the Router's samples shadowing ({spied.get('router', {}).get('samples', 0)} samples)")
                finally:
                    self.stop(proc)
            rounds.append(figures)
            log(f"  round {r}: " + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items() if v is not None))
        self.results["shadow"] = shadow_summary(rounds)
        if self.args.pair_starts:
            from _serving_pairs import paired_windows

            chosen = {"none": self.models["one"]["policy"]}
            chosen.update({f"fraction_{f}": self.models[policies[f]]["policy"] for f in fractions})
            self.results["shadow"]["same_gateway"] = paired_windows(
                self, "shadow", chosen, "none", self.body_file, starts=self.args.pair_starts, pairs=self.args.pairs)

    def section_aggregates(self) -> None:
        from _serving_aggregates import section_aggregates

        section_aggregates(self)

    def section_headline(self) -> None:
        from _serving_headline import section_headline

        section_headline(self)

    def section_memory(self) -> None:
        proc, info = self.gateway("gateway-4variants", self.models["four"]["policy"])
        try:
            url = f"{info['url']}/v2/models/{EXPERIMENT}/infer"
            self.points["gateway4_c16"] = self.loader.run(url, self.body_file, 16, proc=proc)
            time.sleep(1.0)
            mem = system_memory(proc)
            self.results["memory_4_variants"] = mem
            log(f"  4 variants: RSS {mem['rss_mib']:.0f} MiB (PSS {mem['pss_mib']:.0f} MiB) over "
                f"{mem['processes']} processes")
        finally:
            self.stop(proc)
