"""What bench/serving.py reports: the machine it ran on, the headline figures computed from the
load points and the sections' results (ratios against bare Ray Serve and MLServer, Redis round
trips, rewards/s, tracing overhead, memory, scaling) with every goal and its verdict (the JSON),
the Markdown table printed at the end, and that table written into bench/README.md between
<!-- serving:start --> and <!-- serving:end --> (by bench/_report.py's write_readme).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any

from _report import write_readme as write_section
from _systems import BENCH, MLSERVER_VERSION

README = BENCH / "README.md"
START_MARK = "<!-- serving:start -->"
END_MARK = "<!-- serving:end -->"

GOALS = {
    "throughput_ratio_vs_bare": (">=", 0.9),
    "added_p50_ms": ("<=", 1.5),
    "p99_ratio_vs_bare": ("<=", 1.2),
    "throughput_ratio_vs_mlserver": (">=", 1.0),
    "redis_roundtrips_per_predict": ("<=", 1.0),
    "rewards_per_s": (">=", 5000.0),
    "store_vs_redis_benchmark": (">=", 0.5),
    "tracing_p50_ratio": ("<=", 1.1),
    "tracing_rps_ratio": (">=", 0.9),
    "rss_mib": ("<=", 3072.0),
    "shadow_ratio_0.1": (">=", 0.95),
    # Per-unit aggregates on, as a share of off (section aggregates, issue 20).
    "aggregates_rps_ratio": (">=", 0.9),
    # The headline (section headline): medians of per-round ratios to MLServer's better setting.
    "headline_rps_c16_vs_mlserver": (">=", 1.5),
    "headline_rps_c64_vs_mlserver": (">=", 1.2),
    "headline_p50_c1_vs_mlserver": ("<=", 1.0),
    "headline_p99_c16_vs_mlserver": ("<=", 1.0),
}


def _spread(s: dict, figure: str) -> str:
    fig = ((s["details"].get("tracing") or {}).get(figure) or {}).get("on") or {}
    if fig.get("min_ratio") is None:
        return ""
    return f"[{fig['min_ratio']:.2f}, {fig['max_ratio']:.2f}]"


def machine() -> dict:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(Exception):
        import psutil

        mem = round(psutil.virtual_memory().total / (1 << 30), 1)
    import ray

    return {"nproc": os.cpu_count(), "cpu": model, "memory_gib": mem, "python": platform.python_version(),
            "ray": ray.__version__, "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def summarize(run) -> dict:
    """The JSON of a run: its headline figures, every goal with its verdict, every load point
    and every section's details."""
    p, r = run.points, run.results
    out: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python bench/serving.py " + " ".join(run.args.argv),
        "protocol": {"warmup_s": run.args.warmup, "measure_s": run.args.measure,
                     "load_tool": "wrk -t1 + bench/serving_post.lua" if run.loader.wrk else "bench/_load.py"},
    }

    def get(point: str, key: str):
        return p.get(point, {}).get(key)

    def ratio(a, b, nd=3):
        return round(a / b, nd) if a is not None and b else None

    out["gateway_rps"] = get("gateway_c16", "rps")
    out["gateway_rps_c1"] = get("gateway_c1", "rps")
    out["bare_rps"] = get("bare_c16", "rps")
    out["bare_direct_rps"] = get("bare_direct_c16", "rps")
    out["mlserver_rps"] = get("mlserver_c16", "rps")
    out["throughput_ratio_vs_bare"] = ratio(out["gateway_rps"], out["bare_rps"])
    out["throughput_ratio_vs_bare_direct"] = ratio(out["gateway_rps"], out["bare_direct_rps"])
    out["throughput_ratio_vs_mlserver"] = ratio(out["gateway_rps"], out["mlserver_rps"])
    g50, b50 = get("gateway_c1", "p50_ms"), get("bare_c1", "p50_ms")
    out["gateway_p50_ms_c1"], out["bare_p50_ms_c1"] = g50, b50
    out["bare_direct_p50_ms_c1"] = get("bare_direct_c1", "p50_ms")
    out["mlserver_p50_ms_c1"] = get("mlserver_c1", "p50_ms")
    out["added_p50_ms"] = round(g50 - b50, 3) if g50 is not None and b50 is not None else None
    # Placement `deployment`: the bare chain's own shape (router -> variant deployment), so
    # what bandit routing, tracing and the decision log add on top of the same hops.
    out["gateway_deployment_rps"] = get("gateway_deployment_c16", "rps")
    out["gateway_deployment_p50_ms_c1"] = get("gateway_deployment_c1", "p50_ms")
    out["deployment_ratio_vs_bare"] = ratio(out["gateway_deployment_rps"], out["bare_rps"])
    gd50 = out["gateway_deployment_p50_ms_c1"]
    out["deployment_added_p50_ms"] = round(gd50 - b50, 3) if gd50 is not None and b50 is not None else None
    out["gateway_p99_ms_c16"], out["bare_p99_ms_c16"] = get("gateway_c16", "p99_ms"), get("bare_c16", "p99_ms")
    out["p99_ratio_vs_bare"] = ratio(out["gateway_p99_ms_c16"], out["bare_p99_ms_c16"])
    red = r.get("redis", {})
    rt = red.get("roundtrips_per_predict")
    out["redis_roundtrips_per_predict"] = None if rt is None else round(rt, 2)
    out["redis_client_commands_per_predict"] = red.get("client_commands_per_predict")
    out["redis_calls_per_predict"] = red.get("calls_per_predict")
    out["rewards_per_s"] = r.get("rewards", {}).get("rewards_per_s")
    st = r.get("store", {})
    out["store_rewards_per_s"] = st.get("store_rewards_per_s")
    out["redis_benchmark_evalsha_per_s"] = st.get("redis_benchmark_evalsha_per_s")
    out["store_vs_redis_benchmark"] = st.get("store_vs_redis_benchmark")
    out["traced_p50_ms_c1"] = get("traced_c1", "p50_ms")
    out["traced_rps"] = get("traced_c16", "rps")
    # Medians of per-round ratios to the same round's untraced gateway (section traced).
    tracing = r.get("tracing", {})
    out["tracing_p50_ratio"] = (tracing.get("p50_c1", {}).get("on") or {}).get("median_ratio")
    out["tracing_rps_ratio"] = (tracing.get("rps_c16", {}).get("on") or {}).get("median_ratio")
    out["spans_exported"] = r.get("trace_sink", {}).get("spans")
    m4 = r.get("memory_4_variants", {})
    out["rss_mib"] = m4.get("rss_mib")
    out["pss_mib"] = m4.get("pss_mib")
    out["rss_mib_1_variant"] = r.get("memory_1_variant", {}).get("rss_mib")
    out["scaling"] = {
        "router1_variant1_rps": get("scaling_router1_variant1_c16", "rps") or out["gateway_rps"],
        "router2_variant1_rps": get("scaling_router2_c16", "rps"),
        "deployment_variant1_rps": get("gateway_deployment_c16", "rps"),
        "router1_variant2_rps": get("scaling_variant2_c16", "rps"),
        "router1_variant1_after_redeploys_rps": get("scaling_back_to_1_1_c16", "rps"),
        "gateway_4_variants_rps": get("gateway4_c16", "rps"),
    }
    sh = r.get("shadow", {})
    out["shadow_ratio_0.1"] = (sh.get("fraction_0.1") or {}).get("median_ratio")
    out["shadow_ratio_1.0"] = (sh.get("fraction_1.0") or {}).get("median_ratio")
    agg = r.get("aggregates", {})
    out["aggregates_rps_ratio"] = (agg.get("rps_c16", {}).get("on") or {}).get("median_ratio")
    out["aggregates_used_rps_ratio"] = (agg.get("rps_c16", {}).get("used") or {}).get("median_ratio")
    out["aggregates_p50_ratio"] = (agg.get("p50_c1", {}).get("on") or {}).get("median_ratio")
    for key, fig in (r.get("headline", {}).get("ratios") or {}).items():
        out[f"headline_{key}"] = fig.get("median")
    out["goals"] = {}
    for key, (op, goal) in GOALS.items():
        value = out.get(key)
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        out["goals"][key] = {"value": value, "goal": f"{op} {goal:g}", "met": met}
    out["points"] = p
    out["details"] = r
    return out


# =============================================================================================
# README
# =============================================================================================


def _f(x, fmt="{:,.0f}", none="n/a") -> str:
    return none if x is None else fmt.format(x)


def _met(s: dict, key: str) -> str:
    m = s["goals"].get(key, {}).get("met")
    return "n/a" if m is None else ("yes" if m else "**no**")


def _ratio_range(s: dict, label: str) -> str:
    fig = (s["details"].get("shadow") or {}).get(label) or {}
    if fig.get("median_ratio") is None:
        return "n/a"
    return f"{fig['median_ratio']:.2f} [{fig['min_ratio']:.2f}, {fig['max_ratio']:.2f}]"


def headline_rows(s: dict) -> list[str]:
    """The headline section's ratios: median [min, max] over its alternating rounds."""
    h = s["details"].get("headline") or {}
    ratios = h.get("ratios") or {}

    def fig(key: str) -> str:
        f = ratios.get(key) or {}
        return "n/a" if f.get("median") is None else f"{f['median']:.2f} [{f['min']:.2f}, {f['max']:.2f}]"

    rounds = h.get("rounds", 0)
    rows = [
        ("Headline: throughput at 16 connections, gateway / MLServer's better setting", "rps_c16_vs_mlserver", ">= 1.5"),
        ("Headline: throughput at 64 connections, gateway / MLServer's better setting", "rps_c64_vs_mlserver", ">= 1.2"),
        ("Headline: p50 at 1 connection, gateway / MLServer's quicker setting", "p50_c1_vs_mlserver", "<= 1.0"),
        ("Headline: p99 at 16 connections, gateway / MLServer's faster setting", "p99_c16_vs_mlserver", "<= 1.0"),
        ("Headline: throughput at 16 connections, gateway / bare Ray Serve chain", "rps_c16_vs_bare", "(report)"),
        ("Headline: p50 at 1 connection, gateway / bare Ray Serve chain", "p50_c1_vs_bare", "(report)"),
    ]
    return [f"| {label} (median of {rounds} alternating rounds [min, max]) | {fig(key)} | {goal} | "
            f"{_met(s, 'headline_' + key) if goal != '(report)' else ''} |" for label, key, goal in rows]


def render_table(s: dict) -> str:
    mach = s["details"].get("machine", {})
    red = s.get("redis_calls_per_predict") or {}
    calls = ", ".join(f"{k} {v:g}" for k, v in red.items()) or "n/a"
    client = ", ".join(f"{k} {v:g}" for k, v in (s.get("redis_client_commands_per_predict") or {}).items()) or "n/a"
    st = s["details"].get("store", {})
    m4 = s["details"].get("memory_4_variants", {})
    sc = s["scaling"]
    rw = s["details"].get("rewards", {})
    lines = [
        f"- date: {s['date']}",
        (f"- machine: nproc={mach.get('nproc')}, {mach.get('cpu')}, {mach.get('memory_gib')} GiB; Python "
        f"{mach.get('python')}, Ray {mach.get('ray')}; shared with other work (1-minute load average "
        f"{mach.get('load_avg_at_start', ['?'])[0]} at the start, per load point in the JSON)"),
        f"- command: `{s['command']}` (wall time {s['details'].get('wall_s')} s)",
        (f"- protocol: every system started by the script, one at a time; {s['protocol']['warmup_s']:g} s warm-up "
        f"dropped, then {s['protocol']['measure_s']:g} s measured, load from {s['protocol']['load_tool']}; the "
        "same row of the churn policy's logistic-regression pipeline (OIP REST) on every system"),
        "",
        "| Measure | Result | Goal | Met |",
        "| --- | --- | --- | --- |",
        (f"| Throughput at 16 connections, gateway (default: placement router) / bare Ray Serve chain (both through "
        f"the gateway's default ingress: HAProxy -> direct ingress, throughput-optimised Serve) | "
        f"{_f(s['gateway_rps'])} / {_f(s['bare_rps'])} req/s = {_f(s['throughput_ratio_vs_bare'], '{:.2f}')} | >= 0.9 | "
        f"{_met(s, 'throughput_ratio_vs_bare')} |"),
        (f"| ... gateway with placement deployment (the bare chain's shape: router -> variant deployment) | "
        f"{_f(s.get('gateway_deployment_rps'))} req/s = {_f(s.get('deployment_ratio_vs_bare'), '{:.2f}')} of bare; "
        f"p50 at 1 connection {_f(s.get('gateway_deployment_p50_ms_c1'), '{:.2f}')} ms "
        f"({_f(s.get('deployment_added_p50_ms'), '{:+.2f}')} ms) | (reference) | |"),
        (f"| ... bare Ray Serve chain through direct ingress (the ingress replica's own port) | "
        f"{_f(s['bare_direct_rps'])} req/s (gateway / it = {_f(s['throughput_ratio_vs_bare_direct'], '{:.2f}')}) | "
        "(reference) | |"),
        (f"| Added p50 at 1 connection | {_f(s['gateway_p50_ms_c1'], '{:.2f}')} - {_f(s['bare_p50_ms_c1'], '{:.2f}')} ms = "
        f"{_f(s['added_p50_ms'], '{:+.2f}')} ms (direct ingress bare: {_f(s['bare_direct_p50_ms_c1'], '{:.2f}')} ms; "
        f"MLServer {_f(s.get('mlserver_p50_ms_c1'), '{:.2f}')} ms) | <= 1.5 ms | {_met(s, 'added_p50_ms')} |"),
        (f"| p99 at 16 connections, gateway / bare | {_f(s['gateway_p99_ms_c16'], '{:.1f}')} / "
        f"{_f(s['bare_p99_ms_c16'], '{:.1f}')} ms = {_f(s['p99_ratio_vs_bare'], '{:.2f}')}x | <= 1.2x | "
        f"{_met(s, 'p99_ratio_vs_bare')} |"),
        (f"| Throughput at 16 connections, gateway / MLServer {MLSERVER_VERSION} | {_f(s['gateway_rps'])} / "
        f"{_f(s['mlserver_rps'])} req/s = {_f(s['throughput_ratio_vs_mlserver'], '{:.2f}')} | >= 1.0 | "
        f"{_met(s, 'throughput_ratio_vs_mlserver')} |"),
        (f"| Redis round trips per predict (client commands, MONITOR; background subtracted) | "
        f"{_f(s['redis_roundtrips_per_predict'], '{:.2f}')} ({client}); all commands per predict "
        f"(INFO commandstats, scripts' included): {calls} | <= 1 | "
        f"{_met(s, 'redis_roundtrips_per_predict')} |"),
        (f"| Batch rewards (POST /v1/rewards, 1,000 items, {rw.get('connections', 4)} connections) | "
        f"{_f(s['rewards_per_s'])} rewards/s (p50 {_f(rw.get('p50_batch_ms'), '{:.0f}')} ms a batch) | >= 5,000/s | "
        f"{_met(s, 'rewards_per_s')} |"),
        (f"| Store update path / redis-benchmark EVALSHA (same script, same Redis) | "
        f"{_f(s['store_rewards_per_s'])} / {_f(s['redis_benchmark_evalsha_per_s'])} per s = "
        f"{_f(s['store_vs_redis_benchmark'], '{:.0%}')} | >= 50% | {_met(s, 'store_vs_redis_benchmark')} |"),
        (f"| Tracing on (every request, OTLP to a local sink) / off, p50 at 1 connection, median of "
        f"per-round ratios | {_f(s['tracing_p50_ratio'], '{:.2f}')}x {_spread(s, 'p50_c1')} | <= 1.1x | "
        f"{_met(s, 'tracing_p50_ratio')} |"),
        (f"| Tracing on / off, throughput at 16 connections, median of per-round ratios | "
        f"{_f(s['tracing_rps_ratio'], '{:.2f}')}x {_spread(s, 'rps_c16')} ({_f(s['spans_exported'])} spans exported) | "
        f">= 0.9x | {_met(s, 'tracing_rps_ratio')} |"),
        (f"| Resident memory, whole system with 4 variants ({m4.get('processes', 'n/a')} processes) | "
        f"RSS {_f(s['rss_mib'])} MiB (PSS {_f(s['pss_mib'])} MiB; 1 variant: RSS {_f(s['rss_mib_1_variant'])} MiB) | "
        f"<= 3,072 MiB | {_met(s, 'rss_mib')} |"),
        (f"| Scaling at 16 connections (same system, redeployed): router replicas 1 -> 2 | "
        f"{_f(sc['router1_variant1_rps'])} -> {_f(sc['router2_variant1_rps'])} req/s (1/1 again after the "
        f"redeploys: {_f(sc.get('router1_variant1_after_redeploys_rps'))}) | (report) | |"),
        (f"| Scaling at 16 connections: variant replicas 1 -> 2 (placement deployment) | "
        f"{_f(sc.get('deployment_variant1_rps'))} -> {_f(sc['router1_variant2_rps'])} req/s | (report) | |"),
        (f"| Shadow traffic: throughput at 16 connections with XGBoost in shadow / without, median of "
        f"{len((s['details'].get('shadow') or {}).get('rounds', []))} alternating rounds [min, max] | "
        f"10% of requests: {_ratio_range(s, 'fraction_0.1')}; 100%: {_ratio_range(s, 'fraction_1.0')} | "
        f">= 0.95 at 10% | {_met(s, 'shadow_ratio_0.1')} |"),
        *headline_rows(s),
        "",
        "| Load point | Connections | req/s | p50 ms | p90 ms | p99 ms | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, pt in s["points"].items():
        lines.append(f"| {name.rsplit('_c', 1)[0]} | {pt['connections']} | {pt['rps']:,.1f} | {pt['p50_ms']:.2f} | "
                     f"{pt['p90_ms']:.2f} | {pt['p99_ms']:.2f} | {pt['non_2xx'] + pt['socket_errors']} |")
    if st.get("redis_benchmark_args"):
        lines += ["", (f"redis-benchmark: `{st['redis_benchmark_args']}`; the store path: "
                  f"`ExperimentStore.apply_rewards` in batches of {st.get('store_batch')}, one client.")]
    errs = s["details"].get("errors")
    if errs:
        lines += ["", "Sections that failed in this run: " + "; ".join(f"{k}: {v}" for k, v in errs.items())]
    return "\n".join(lines)


def write_readme(table: str) -> None:
    """The table, under its heading, into bench/README.md between the serving markers."""
    section = f"## Serving: gateway vs bare Ray Serve and MLServer (`bench/serving.py`)\n\n{table}"
    write_section(README, section, START_MARK, END_MARK)
