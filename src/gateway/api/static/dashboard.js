/* Gateway dashboard.
 *
 * One script for two modes, chosen by the JSON in the element #dashboard-config:
 *   "live":   polls the gateway's JSON API every 2 s (GET /v1/experiments, /v1/experiments/{e},
 *             /v1/experiments/{e}/series?since=...) and redraws;
 *   "static": draws the data embedded in the page (the demo's self-contained report).
 * Its only dependency is plotly.js, served by the gateway itself (no CDN).
 *
 * Every chart container carries data-variants (JSON list of the variant names plotted) and
 * data-points (time points plotted; for the posterior, density samples per variant), and
 * <body> carries data-state = loading | ready | error, so that tests can check real data.
 *
 * Rewards are bernoulli (Beta posteriors of a rate in [0, 1]) or gaussian (state.reward_type;
 * Normal-Inverse-Gamma posteriors of a real mean, drawn as the mean's Student-t marginal).
 */
(function () {
  "use strict";

  var REFRESH_MS = 2000; // the router records a series point every 2 s
  var MAX_POINTS = 5000;
  var PALETTE = [
    "#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea",
    "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d",
  ];
  // Decision kinds: matched on the history entry's action, in order.
  var ACTIONS = [
    { re: /rollback|demot|revert/i, color: "#dc2626", label: "rollback" },
    { re: /promot/i, color: "#16a34a", label: "promote" },
    { re: /resum/i, color: "#0891b2", label: "resume" },
    { re: /pause|freez|halt/i, color: "#d97706", label: "pause" },
    { re: /drift|alarm|guardrail|alert|anomal/i, color: "#e11d48", label: "alarm" },
    { re: /retire|remove|delete|drop/i, color: "#64748b", label: "retire" },
    { re: /add|challeng|retrain|deploy|new/i, color: "#7c3aed", label: "challenger" },
  ];
  var OTHER_ACTION = { color: "#475569" };

  // ---- maths: log-gamma (Lanczos, g = 7, n = 9), the Beta and Student-t densities -------

  var LANCZOS = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
    -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  var HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

  function lgamma(x) {
    if (x < 0.5) {
      // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
      return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lgamma(1 - x);
    }
    x -= 1;
    var a = LANCZOS[0];
    var t = x + 7.5;
    for (var i = 1; i < 9; i++) a += LANCZOS[i] / (x + i);
    return HALF_LOG_2PI + (x + 0.5) * Math.log(t) - t + Math.log(a);
  }

  function logBeta(a, b) {
    return lgamma(a) + lgamma(b) - lgamma(a + b);
  }

  /** The Beta(a, b) density at x; null where it is infinite (x at an edge with a or b < 1). */
  function betaPdf(x, a, b, lb) {
    if (!(a > 0 && b > 0) || x < 0 || x > 1) return 0;
    if (lb === undefined) lb = logBeta(a, b);
    var left = a === 1 ? 0 : (x === 0 ? (a > 1 ? -Infinity : Infinity) : (a - 1) * Math.log(x));
    var right = b === 1 ? 0 : (x === 1 ? (b > 1 ? -Infinity : Infinity) : (b - 1) * Math.log1p(-x));
    var lp = left + right - lb;
    if (lp === Infinity || isNaN(lp)) return null;
    return Math.exp(lp);
  }

  /** The Student-t density at x with location mu, scale s and df degrees of freedom. */
  function studentTPdf(x, mu, s, df) {
    if (!(s > 0 && df > 0) || !isFinite(x)) return 0;
    var z = (x - mu) / s;
    return Math.exp(lgamma((df + 1) / 2) - lgamma(df / 2) - 0.5 * Math.log(df * Math.PI) - Math.log(s) -
      (df + 1) / 2 * Math.log1p(z * z / df));
  }

  /** The marginal of the mean under NIG(mu, kappa, alpha, beta): Student t with 2 alpha degrees of
   * freedom, location mu and scale sqrt(beta / (alpha kappa)); null unless the posterior is one. */
  function nigMarginal(post) {
    if (!post || !num(post.mu) || !(post.kappa > 0 && post.alpha > 0 && post.beta > 0)) return null;
    return { mu: post.mu, scale: Math.sqrt(post.beta / (post.alpha * post.kappa)), df: 2 * post.alpha };
  }

  // ---- small helpers --------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function esc(value) {
    return String(value === null || value === undefined ? "" : value)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  function num(x) { return typeof x === "number" && isFinite(x); }

  function fixed(x, digits) { return num(x) ? x.toFixed(digits) : "–"; }

  function pct(x, digits) { return num(x) ? (100 * x).toFixed(digits === undefined ? 1 : digits) + "%" : "–"; }

  function loss(x) {
    if (!num(x)) return "–";
    if (x === 0) return "0";
    return x >= 0.001 ? x.toFixed(4) : x.toExponential(1);
  }

  function count(x) { return num(x) ? Math.round(x).toLocaleString("en-US") : "–"; }

  /** About four significant digits, for parameters whose scale depends on the rewards. */
  function sig(x) {
    if (!num(x)) return "–";
    var a = Math.abs(x);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(2);
    return String(parseFloat(x.toPrecision(4)));
  }

  function signed(x, digits) { return num(x) ? (x > 0 ? "+" : "") + x.toFixed(digits) : "–"; }

  function setText(id, text) { var el = $(id); if (el) el.textContent = text; }

  /** Gaussian rewards: real-valued means, Normal-Inverse-Gamma posteriors (a state without
   * reward_type, e.g. an older report's, tells by its posteriors). */
  function isGaussian() {
    var st = S.state;
    if (!st) return false;
    if (st.reward_type) return st.reward_type === "gaussian";
    return (st.variants || []).some(function (v) { return v.posterior && num(v.posterior.mu); });
  }

  function pad(n, w) { var s = String(n); while (s.length < (w || 2)) s = "0" + s; return s; }

  /** Unix seconds as a local date-time string plotly reads as is (no time-zone shift). */
  function plotTime(t) {
    var d = new Date(t * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  function clock(t, reference) {
    if (!num(t)) return "–";
    var d = new Date(t * 1000);
    var hms = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    var r = new Date((num(reference) ? reference : Date.now() / 1000) * 1000);
    if (d.toDateString() === r.toDateString()) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hms;
  }

  function duration(s) {
    if (!num(s) || s < 0) return "–";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " days";
  }

  function alpha(hex, a) {
    var h = hex.replace("#", "");
    var r = parseInt(h.slice(0, 2), 16), g = parseInt(h.slice(2, 4), 16), b = parseInt(h.slice(4, 6), 16);
    return "rgba(" + r + "," + g + "," + b + "," + a + ")";
  }

  /** How much a decision matters, for choosing which get a text label on the charts. */
  function weight(action) {
    var a = action || "";
    if (/promot|rollback|demot|revert/i.test(a)) return 3;
    if (/drift|alarm|guardrail|alert|anomal/i.test(a)) return 2;
    if (/add|challeng|retire|remove/i.test(a)) return 1;
    return 0;
  }

  function actionStyle(action) {
    for (var i = 0; i < ACTIONS.length; i++) if (ACTIONS[i].re.test(action || "")) return ACTIONS[i];
    return OTHER_ACTION;
  }

  // ---- state ----------------------------------------------------------------------------

  var cfg = JSON.parse($("dashboard-config").textContent);
  if (typeof cfg.refresh_ms === "number" && cfg.refresh_ms >= 250) REFRESH_MS = cfg.refresh_ms;
  var S = {
    mode: cfg.mode === "static" ? "static" : "live",
    base: (cfg.api_base || "").replace(/\/$/, ""),
    names: [],          // experiments to choose from
    current: null,      // the experiment shown
    state: null,        // GET /v1/experiments/{e}
    points: [],         // series points, in time order
    history: [],        // decision history
    colors: {},         // variant -> colour, stable while the page shows the experiment
    nextColor: 0,
    gen: 0,             // bumps when the experiment changes, so stale answers are dropped
    timer: null,
    updated: null,
    embedded: {},       // static mode: name -> {state, points, history}
    errorBanner: false, // the banner shows an error that the next good answer clears
  };

  function colorOf(name) {
    if (!(name in S.colors)) S.colors[name] = PALETTE[S.nextColor++ % PALETTE.length];
    return S.colors[name];
  }

  /** Variants in a stable order: the state's (policy) order, then any only in the series. */
  function variantOrder() {
    var names = [];
    var seen = {};
    function add(n) { if (!seen[n]) { seen[n] = true; names.push(n); colorOf(n); } }
    if (S.state && S.state.variants) S.state.variants.forEach(function (v) { add(v.name); });
    S.points.forEach(function (p) { Object.keys(p.variants || {}).forEach(add); });
    return names;
  }

  function resetExperiment(name) {
    S.gen++;
    S.current = name;
    S.state = null;
    S.points = [];
    S.history = [];
    S.colors = {};
    S.nextColor = 0;
    var select = $("experiment-select");
    if (select && select.value !== name) select.value = name;
  }

  function mergePoints(points) {
    if (!points || !points.length) return;
    var last = S.points.length ? S.points[S.points.length - 1].t : -Infinity;
    points.forEach(function (p) {
      if (num(p.t) && p.t > last) { S.points.push(p); last = p.t; }
    });
    if (S.points.length > MAX_POINTS) S.points.splice(0, S.points.length - MAX_POINTS);
  }

  // ---- rendering: header, cards, table ----------------------------------------------------

  function referenceTime() {
    if (S.mode === "live") return Date.now() / 1000;
    if (S.points.length) return S.points[S.points.length - 1].t;
    return cfg.generated_at || Date.now() / 1000;
  }

  function statusBadge(status) {
    var known = { exploring: 1, promoted: 1, paused: 1 };
    var cls = known[status] ? "status-" + status : "status-other";
    return '<span class="status ' + cls + '">' + esc(status || "unknown") + "</span>";
  }

  function renderOverview() {
    var st = S.state || {};
    var totals = st.totals || {};
    var variants = st.variants || [];
    if (!num(totals.requests)) totals.requests = variants.reduce(function (s, v) { return s + (v.requests || 0); }, 0);
    if (!num(totals.rewards)) totals.rewards = variants.reduce(function (s, v) { return s + (v.rewards || 0); }, 0);
    var rule = st.promotion_rule || {};
    var ruleText = [];
    if (num(rule.prob_best)) ruleText.push("P(best) ≥ " + rule.prob_best);
    if (num(rule.max_expected_loss)) ruleText.push("loss ≤ " + rule.max_expected_loss);
    if (num(rule.min_samples)) ruleText.push("≥ " + count(rule.min_samples) + " rewards each");
    var champ = st.champion;
    var cards = [
      ["Status", statusBadge(st.status), st.allocation ? "allocation: " + esc(st.allocation) : ""],
      ["Champion", champ ? '<span class="vname"><span class="swatch" style="background:' + colorOf(champ) + '"></span>' + esc(champ) + "</span>" : '<span class="muted">none yet</span>', ""],
      ["Requests", count(totals.requests), variants.length + " variants"],
      ["Rewards", count(totals.rewards), num(totals.requests) && totals.requests > 0 ? pct(totals.rewards / totals.requests, 0) + " of requests" : ""],
      ["Running for", duration(num(st.started_at) ? referenceTime() - st.started_at : NaN), num(st.started_at) ? "since " + clock(st.started_at, referenceTime()) : ""],
      ["Promotion rule", esc(ruleText.join(", ") || "–"), "", true],
    ];
    var up = st.holdout_uplift;
    if (up && num(up.uplift)) {
      var ci = up.credible_interval || [];
      var digits = isGaussian() ? 3 : 4;
      cards.push(["Uplift vs holdout", signed(up.uplift, digits),
        esc(up.variant) + " vs " + esc(up.holdout) + " · [" + signed(ci[0], digits) + ", " + signed(ci[1], digits) + "] · P(&gt; 0) " + pct(up.prob_positive, 0)]);
    }
    $("overview").innerHTML = cards.map(function (c) {
      return '<div class="card"><div class="label">' + c[0] + '</div><div class="value' + (c[3] ? " small" : "") + '">' + c[1] + "</div>" +
        (c[2] ? '<div class="detail">' + c[2] + "</div>" : "") + "</div>";
    }).join("");
    $("experiment-title").textContent = S.current || "";
    var meta = [];
    if (S.points.length) meta.push(count(S.points.length) + " points from " + clock(S.points[0].t, referenceTime()) + " to " + clock(S.points[S.points.length - 1].t, referenceTime()));
    $("experiment-meta").textContent = meta.join(" · ");
    document.title = (S.current ? S.current + " · " : "") + (S.mode === "static" ? "Gateway report" : "Gateway dashboard");
  }

  function bar(value, color) {
    var w = num(value) ? Math.max(0, Math.min(1, value)) * 100 : 0;
    return '<span class="bar"><span>' + (num(value) ? fixed(value, 3) : "–") + '</span><span class="track"><span class="fill" style="display:block;width:' +
      w.toFixed(1) + "%;background:" + color + '"></span></span></span>';
  }

  function renderTable() {
    var st = S.state || {};
    var rows = (st.variants || []).map(function (v) {
      var c = colorOf(v.name);
      var tags = "";
      if (st.champion === v.name) tags += ' <span class="tag champion">champion</span>';
      if (v.role === "holdout") tags += ' <span class="tag holdout">holdout</span>';
      if (v.role === "shadow") tags += ' <span class="tag shadow">shadow</span>';
      if (v.retired || v.role === "retired" || v.status === "retired") tags += ' <span class="tag retired">retired</span>';
      var ci = v.credible_interval || [];
      var post = v.posterior || {};
      return '<tr class="' + (st.champion === v.name ? "is-champion" : "") + '" data-variant="' + esc(v.name) + '">' +
        '<td><span class="vname"><span class="swatch" style="background:' + c + '"></span>' + esc(v.name) + "</span>" + tags + "</td>" +
        "<td>" + fixed(v.mean, 4) + '<span class="ci">[' + fixed(ci[0], 3) + ", " + fixed(ci[1], 3) + "]</span>" +
          (ips(st, v.name) !== null ? '<span class="ips" title="IPS-corrected mean: unbiased under adaptive allocation">IPS ' + fixed(ips(st, v.name), 4) + "</span>" : "") + "</td>" +
        '<td class="muted">' + posteriorText(post) + "</td>" +
        "<td>" + bar(v.prob_best, c) + "</td>" +
        "<td>" + loss(v.expected_loss) + "</td>" +
        "<td>" + bar(v.traffic_share, c) + "</td>" +
        "<td>" + count(v.requests) + "</td>" +
        "<td>" + count(v.rewards) + "</td></tr>";
    });
    $("variants-body").innerHTML = rows.join("") || '<tr><td colspan="8" class="muted">No variants.</td></tr>';
  }

  /** The variant's IPS-corrected mean from the state's corrected_means, or null. */
  function ips(st, name) {
    var c = st.corrected_means && st.corrected_means[name];
    return c && num(c.mean) ? c.mean : null;
  }

  /** Beta: α · β (pseudo-counts); NIG: μ · κ · α · β. */
  function posteriorText(post) {
    if (num(post.mu)) return "μ " + sig(post.mu) + " · κ " + sig(post.kappa) + " · α " + sig(post.alpha) + " · β " + sig(post.beta);
    if (num(post.alpha)) return "α " + fixed(post.alpha, 0) + " · β " + fixed(post.beta, 0);
    return "–";
  }

  // ---- rendering: model monitoring (online KPIs, drift) -----------------------------------

  var LEVELS = { stable: "#16a34a", moderate: "#d97706", significant: "#dc2626" };

  function renderMonitoring() {
    var panel = $("monitoring");
    if (!panel) return;
    var st = S.state || {};
    var kpis = st.kpis && typeof st.kpis === "object" ? st.kpis : null;
    var drift = st.drift && typeof st.drift === "object" ? st.drift : null;
    panel.hidden = !kpis && !drift;
    // Variants in the state's order, then any only in the KPIs.
    var names = (st.variants || []).map(function (v) { return v.name; });
    Object.keys(kpis || {}).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); });
    var shown = names.filter(function (n) { return kpis && kpis[n]; });
    var rows = shown.map(function (n) {
      var w = kpis[n].window || {}, l = kpis[n].lifetime || {};
      return '<tr data-variant="' + esc(n) + '"><td><span class="vname"><span class="swatch" style="background:' + colorOf(n) + '"></span>' +
        esc(n) + "</span></td>" +
        "<td>" + fixed(w.accuracy, 3) + "</td><td>" + fixed(w.f1, 3) + "</td><td>" + fixed(w.roc_auc, 3) + "</td>" +
        "<td>" + count(w.n) + "</td><td>" + fixed(l.accuracy, 3) + "</td><td>" + count(l.n) + "</td></tr>";
    });
    var body = $("kpi-body");
    if (body) body.innerHTML = rows.join("") || '<tr><td colspan="7" class="muted">No KPIs yet: they need labelled feedback.</td></tr>';
    var table = $("kpi-table");
    if (table) table.setAttribute("data-variants", JSON.stringify(shown));
    var box = $("drift-summary");
    if (!box) return;
    box.setAttribute("data-level", drift && drift.level ? drift.level : "");
    box.setAttribute("data-max-psi", drift && num(drift.max_psi) ? String(drift.max_psi) : "");
    if (!drift) { box.innerHTML = ""; return; }
    var rowsText = count(drift.reference_rows) + " reference rows, " + count(drift.live_rows) + " live";
    if (drift.status !== "ok" || !num(drift.max_psi)) {
      box.innerHTML = '<span class="label">Drift</span><span class="muted">not enough predictions yet (' + esc(rowsText) + ")</span>";
      return;
    }
    var psis = [];
    Object.keys(drift.features || {}).forEach(function (k) { psis.push([k, drift.features[k]]); });
    Object.keys(drift.predictions || {}).forEach(function (k) { psis.push(["predictions of " + k, drift.predictions[k]]); });
    psis.sort(function (a, b) { return b[1] - a[1]; });
    var top = psis.slice(0, 3).map(function (p) { return esc(p[0]) + " " + fixed(p[1], 3); }).join(", ");
    var color = LEVELS[drift.level] || "#475569";
    box.innerHTML = '<span class="label">Drift</span>max PSI <strong>' + fixed(drift.max_psi, 3) + "</strong>" +
      ' <span class="level" style="background:' + color + '">' + esc(drift.level || "?") + "</span>" +
      '<span class="muted">' + (top ? "largest: " + top + " · " : "") + "vs " + esc(drift.reference || "reference") + " (" + esc(rowsText) + ")</span>";
  }

  function renderLegend(names) {
    var items = names.map(function (n) {
      return '<span class="item"><span class="line" style="background:' + colorOf(n) + '"></span>' + esc(n) + "</span>";
    });
    items.push('<span class="sep"></span><span class="item"><span class="decision"></span>decision (hover for details)</span>');
    $("legend").innerHTML = items.join("");
  }

  // ---- rendering: charts ------------------------------------------------------------------

  var PLOT_CONFIG = {
    displaylogo: false,
    displayModeBar: "hover",
    responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d", "toggleSpikelines"],
  };

  function baseLayout(extra) {
    var layout = {
      margin: { l: 54, r: 18, t: 36, b: 38 },
      font: { family: getComputedStyle(document.body).fontFamily, size: 12, color: "#334155" },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      showlegend: false,
      hovermode: "x unified",
      hoverlabel: { bgcolor: "#ffffff", bordercolor: "#cbd5e1", font: { color: "#0f172a" } },
      uirevision: S.current,
      xaxis: { type: "date", gridcolor: "#eef2f7", linecolor: "#cbd5e1", zeroline: false, tickfont: { color: "#64748b" } },
      yaxis: { gridcolor: "#eef2f7", linecolor: "#cbd5e1", zeroline: false, tickfont: { color: "#64748b" }, automargin: true },
      shapes: [],
      annotations: [],
    };
    Object.keys(extra || {}).forEach(function (k) {
      if (typeof extra[k] === "object" && extra[k] && !Array.isArray(extra[k]) && layout[k] && typeof layout[k] === "object") {
        Object.keys(extra[k]).forEach(function (j) { layout[k][j] = extra[k][j]; });
      } else {
        layout[k] = extra[k];
      }
    });
    return layout;
  }

  function waiting(layout, text) {
    layout.annotations.push({
      xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
      text: text, font: { size: 13, color: "#94a3b8" },
    });
  }

  /** Decisions on a time chart: a dashed vertical line each, a hoverable marker at the top
   * (on a hidden 0..1 axis, so it sits at the top whatever the chart's own scale), and a text
   * label where there is room for one. Returns the marker trace to add, or null. */
  function decorateDecisions(layout) {
    if (!S.points.length) return null;
    var t0 = S.points[0].t - 5;
    var t1 = Math.max(S.points[S.points.length - 1].t, t0 + 10);
    var shown = S.history.filter(function (e) { return num(e.at) && e.at >= t0; })
      .sort(function (a, b) { return a.at - b.at; });
    if (!shown.length) return null;
    var ref = referenceTime();
    // Text labels where there is room, the weightiest decisions first.
    var minGap = 0.14 * (Math.max(t1, shown[shown.length - 1].at) - t0);
    var labelled = [];
    shown.slice().sort(function (a, b) { return weight(b.action) - weight(a.action) || a.at - b.at; }).forEach(function (e) {
      if (labelled.every(function (l) { return Math.abs(l.at - e.at) >= minGap; })) labelled.push(e);
    });
    shown.forEach(function (e) {
      var style = actionStyle(e.action);
      var x = plotTime(e.at);
      layout.shapes.push({
        type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: { color: style.color, width: 1.4, dash: "dash" }, layer: "above",
      });
      if (labelled.indexOf(e) >= 0) {
        layout.annotations.push({
          xref: "x", yref: "paper", x: x, y: 1, yanchor: "bottom", xanchor: "center", yshift: 7, showarrow: false,
          text: esc((e.action || "?") + (e.variant ? " " + e.variant : "")),
          font: { size: 10.5, color: style.color },
        });
      }
    });
    layout.yaxis2 = { overlaying: "y", range: [0, 1], visible: false, fixedrange: true };
    return {
      type: "scatter", mode: "markers", yaxis: "y2", cliponaxis: false, name: "decisions",
      x: shown.map(function (e) { return plotTime(e.at); }),
      y: shown.map(function () { return 1; }),
      marker: { symbol: "triangle-down", size: 10, color: shown.map(function (e) { return actionStyle(e.action).color; }),
        line: { color: "#ffffff", width: 1 } },
      text: shown.map(function (e) {
        return esc(clock(e.at, ref) + " · " + (e.action || "?") + (e.variant ? " " + e.variant : "")) +
          (e.reason ? "<br>" + esc(e.reason.length > 90 ? e.reason.slice(0, 88) + "…" : e.reason) : "") +
          (e.by ? "<br>by " + esc(e.by) : "");
      }),
      hovertemplate: "%{text}<extra></extra>",
    };
  }

  function withDecisions(traces, layout) {
    var markers = decorateDecisions(layout);
    return markers ? traces.concat([markers]) : traces;
  }

  function seriesOf(name, key) {
    return S.points.map(function (p) {
      var v = (p.variants || {})[name];
      if (!v) return null;
      var x = v[key];
      return num(x) ? x : null;
    });
  }

  function mark(el, names, points) {
    el.setAttribute("data-variants", JSON.stringify(names));
    el.setAttribute("data-points", String(points));
  }

  function drawTraffic(names, xs) {
    var el = $("chart-traffic");
    var plotted = [];
    var traces = names.map(function (n) {
      var ys = seriesOf(n, "traffic_share");
      if (ys.some(function (y) { return y !== null; })) plotted.push(n);
      var c = colorOf(n);
      return {
        type: "scatter", mode: "lines", name: n, x: xs, y: ys, stackgroup: "traffic",
        line: { color: c, width: 1.2, shape: "hv" }, fillcolor: alpha(c, 0.55),
        hovertemplate: "%{y:.1%}<extra>" + esc(n) + "</extra>",
      };
    });
    var layout = baseLayout({ yaxis: { range: [0, 1], tickformat: ".0%", title: { text: "share of requests", font: { size: 11 } } } });
    if (!xs.length) waiting(layout, "waiting for the first points (one every 2 s)");
    Plotly.react(el, withDecisions(traces, layout), layout, PLOT_CONFIG);
    mark(el, plotted, xs.length);
  }

  /** The y range of the reward chart: around the means and the informative part of the bands,
   * so that the wide prior bands of the first seconds do not squash the rest. */
  function rewardRange(names) {
    var gaussian = isGaussian();
    var lo = Infinity, hi = -Infinity;
    // A gaussian reward has no natural scale: a band counts when it is at most 20 times the
    // narrowest one of the latest point (the prior's bands are wider by orders of magnitude).
    var last = S.points.length ? S.points[S.points.length - 1].variants || {} : {};
    var narrowest = Infinity;
    names.forEach(function (n) {
      var ci = (last[n] || {}).credible_interval;
      if (ci && num(ci[0]) && num(ci[1])) narrowest = Math.min(narrowest, ci[1] - ci[0]);
    });
    var maxWidth = gaussian ? 20 * narrowest : 0.25;
    S.points.forEach(function (p) {
      names.forEach(function (n) {
        var v = (p.variants || {})[n];
        if (!v) return;
        if (num(v.mean)) { lo = Math.min(lo, v.mean); hi = Math.max(hi, v.mean); }
        var ci = v.credible_interval;
        if (ci && num(ci[0]) && num(ci[1]) && ci[1] - ci[0] < maxWidth) { lo = Math.min(lo, ci[0]); hi = Math.max(hi, ci[1]); }
      });
    });
    if (!(hi >= lo)) return [0, 1];
    if (gaussian) {
      var gpad = Math.max(0.1 * (hi - lo), 0.02 * Math.max(Math.abs(lo), Math.abs(hi)), 1e-6);
      return [lo - gpad, hi + gpad];
    }
    var pad = Math.max(0.1 * (hi - lo), 0.02);
    return [Math.max(0, lo - pad), Math.min(1, hi + pad)];
  }

  function drawReward(names, xs) {
    var el = $("chart-reward");
    var bands = [], lines = [], plotted = [];
    names.forEach(function (n) {
      var c = colorOf(n);
      var lo = S.points.map(function (p) { var v = (p.variants || {})[n]; return v && v.credible_interval && num(v.credible_interval[0]) ? v.credible_interval[0] : null; });
      var hi = S.points.map(function (p) { var v = (p.variants || {})[n]; return v && v.credible_interval && num(v.credible_interval[1]) ? v.credible_interval[1] : null; });
      var mean = seriesOf(n, "mean");
      if (mean.some(function (y) { return y !== null; })) plotted.push(n);
      bands.push({ type: "scatter", mode: "lines", x: xs, y: lo, line: { width: 0, color: c }, hoverinfo: "skip", name: n + " 2.5%" });
      bands.push({
        type: "scatter", mode: "lines", x: xs, y: hi, line: { width: 0, color: c }, fill: "tonexty",
        fillcolor: alpha(c, 0.16), hoverinfo: "skip", name: n + " 97.5%",
      });
      lines.push({
        type: "scatter", mode: "lines", name: n, x: xs, y: mean, line: { color: c, width: 2 },
        customdata: lo.map(function (l, i) { return [l, hi[i]]; }),
        hovertemplate: "%{y:.4f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra>" + esc(n) + "</extra>",
      });
    });
    var layout = baseLayout({ yaxis: {
      title: { text: isGaussian() ? "mean reward" : "reward rate", font: { size: 11 } },
      tickformat: isGaussian() ? "" : ".2f", range: rewardRange(names),
    } });
    if (!xs.length) waiting(layout, "waiting for the first points (one every 2 s)");
    Plotly.react(el, withDecisions(bands.concat(lines), layout), layout, PLOT_CONFIG);
    mark(el, plotted, xs.length);
  }

  function drawProbBest(names, xs) {
    var el = $("chart-prob-best");
    var plotted = [];
    var traces = [];
    names.forEach(function (n) {
      var ys = seriesOf(n, "prob_best");
      if (!ys.some(function (y) { return y !== null; })) return; // a holdout has no P(best)
      plotted.push(n);
      traces.push({
        type: "scatter", mode: "lines", name: n, x: xs, y: ys, line: { color: colorOf(n), width: 2 },
        hovertemplate: "%{y:.3f}<extra>" + esc(n) + "</extra>",
      });
    });
    var layout = baseLayout({ yaxis: { range: [0, 1.02], tickformat: ".0%", title: { text: "P(best)", font: { size: 11 } } } });
    var threshold = S.state && S.state.promotion_rule && S.state.promotion_rule.prob_best;
    if (num(threshold)) {
      layout.shapes.push({
        type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: threshold, y1: threshold,
        line: { color: "#94a3b8", width: 1, dash: "dot" },
      });
      layout.annotations.push({
        xref: "paper", yref: "y", x: 0, y: threshold, xanchor: "left", yanchor: "top", showarrow: false,
        text: "promotion threshold " + threshold, font: { size: 10.5, color: "#64748b" },
      });
    }
    if (!xs.length) waiting(layout, "waiting for the first points (one every 2 s)");
    Plotly.react(el, withDecisions(traces, layout), layout, PLOT_CONFIG);
    mark(el, plotted, xs.length);
  }

  /** A grid over [lo, hi], denser around each variant's credible interval. */
  function densityGrid(lo, hi, intervals) {
    var xs = [];
    var i;
    for (i = 0; i <= 240; i++) xs.push(lo + (hi - lo) * i / 240);
    intervals.forEach(function (ci) {
      var w = Math.max(ci[1] - ci[0], 1e-6);
      var a = Math.max(lo, ci[0] - w), b = Math.min(hi, ci[1] + w);
      for (i = 0; i <= 120; i++) xs.push(a + (b - a) * i / 120);
    });
    xs.sort(function (p, q) { return p - q; });
    return xs.filter(function (x, k) { return k === 0 || x - xs[k - 1] > 1e-9; });
  }

  /** The x range of the posterior chart: around the credible intervals, leaving out those much
   * wider than the narrowest (a variant still at its prior), within [0, 1] for a rate. */
  function posteriorRange(intervals, gaussian) {
    if (!intervals.length) return [0, 1];
    var narrowest = Math.min.apply(null, intervals.map(function (c) { return c[1] - c[0]; }));
    var focus = gaussian ? intervals.filter(function (c) { return c[1] - c[0] <= 20 * narrowest; }) : intervals;
    var a = Math.min.apply(null, focus.map(function (c) { return c[0]; }));
    var b = Math.max.apply(null, focus.map(function (c) { return c[1]; }));
    if (gaussian) {
      var w = Math.max(b - a, 1e-6 + 0.02 * Math.max(Math.abs(a), Math.abs(b)));
      return [a - 0.5 * w, b + 0.5 * w];
    }
    var wb = Math.max(b - a, 0.02);
    return [Math.max(0, a - 0.5 * wb), Math.min(1, b + 0.5 * wb)];
  }

  /** Each variant's posterior of its mean reward: the Beta density of a bernoulli rate, the
   * Student-t marginal of a gaussian mean (never a Beta drawn from NIG parameters). */
  function drawPosterior(names) {
    var el = $("chart-posterior");
    var gaussian = isGaussian();
    setText("posterior-title", gaussian ? "Posterior mean reward" : "Posterior reward rate");
    setText("posterior-hint", gaussian
      ? "Student-t marginal of each variant's mean reward (Normal-Inverse-Gamma posterior) now; dotted lines at the means"
      : "Beta density of each variant's reward rate now; dotted lines at the means");
    var variants = ((S.state && S.state.variants) || []).filter(function (v) {
      if (gaussian) return nigMarginal(v.posterior) !== null;
      return v.posterior && num(v.posterior.alpha) && num(v.posterior.beta) && v.posterior.alpha > 0 && v.posterior.beta > 0 && !num(v.posterior.mu);
    });
    var intervals = variants.map(function (v) {
      var ci = v.credible_interval;
      if (ci && num(ci[0]) && num(ci[1])) return ci;
      var t = gaussian ? nigMarginal(v.posterior) : null;
      return t ? [t.mu - 4 * t.scale, t.mu + 4 * t.scale] : [0, 1];
    });
    var range = posteriorRange(intervals, gaussian);
    var lo = range[0], hi = range[1];
    var visible = intervals.map(function (c) { return [Math.max(lo, c[0]), Math.min(hi, c[1])]; })
      .filter(function (c) { return c[1] > c[0]; });
    var xs = densityGrid(lo, hi, visible);
    var traces = variants.map(function (v) {
      var c = colorOf(v.name);
      var ys, label;
      if (gaussian) {
        var t = nigMarginal(v.posterior);
        ys = xs.map(function (x) { return studentTPdf(x, t.mu, t.scale, t.df); });
        label = "t(" + sig(t.df) + " df, " + sig(t.mu) + ", " + sig(t.scale) + ")";
      } else {
        var al = v.posterior.alpha, be = v.posterior.beta, lb = logBeta(al, be);
        ys = xs.map(function (x) { return betaPdf(x, al, be, lb); });
        label = "Beta(" + fixed(al, 0) + ", " + fixed(be, 0) + ")";
      }
      return {
        type: "scatter", mode: "lines", name: v.name, x: xs, y: ys,
        line: { color: c, width: 2 }, fill: "tozeroy", fillcolor: alpha(c, 0.14),
        hovertemplate: (gaussian ? "mean %{x:.4g}" : "rate %{x:.4f}") + "<br>density %{y:.3g}<extra>" + esc(v.name) + " " + label + "</extra>",
      };
    });
    var layout = baseLayout({
      hovermode: "closest",
      xaxis: { type: "linear", range: [lo, hi], title: { text: gaussian ? "mean reward" : "reward rate", font: { size: 11 } }, tickformat: gaussian ? "" : ".2f" },
      yaxis: { title: { text: "density", font: { size: 11 } }, rangemode: "tozero" },
    });
    variants.forEach(function (v) {
      if (!num(v.mean)) return;
      layout.shapes.push({
        type: "line", xref: "x", yref: "paper", x0: v.mean, x1: v.mean, y0: 0, y1: 1,
        line: { color: colorOf(v.name), width: 1, dash: "dot" },
      });
    });
    if (!variants.length) waiting(layout, "no posterior yet");
    Plotly.react(el, traces, layout, PLOT_CONFIG);
    mark(el, variants.map(function (v) { return v.name; }), variants.length ? xs.length : 0);
  }

  function renderCharts() {
    var names = variantOrder();
    var xs = S.points.map(function (p) { return plotTime(p.t); });
    renderLegend(names);
    drawPosterior(names);
    drawTraffic(names, xs);
    setText("reward-title", isGaussian() ? "Mean reward" : "Reward rate");
    setText("prob-best-hint", "posterior probability that each variant has the highest " + (isGaussian() ? "mean reward" : "reward rate"));
    drawReward(names, xs);
    drawProbBest(names, xs);
  }

  // ---- rendering: decision timeline -------------------------------------------------------

  /** A drift alarm's largest PSI values (evidence.psi: name -> PSI), on one line. */
  function psiEvidence(evidence) {
    var psi = evidence && typeof evidence === "object" ? evidence.psi : null;
    if (!psi || typeof psi !== "object") return "";
    var items = Object.keys(psi).filter(function (k) { return num(psi[k]); })
      .sort(function (a, b) { return psi[b] - psi[a]; }).slice(0, 3)
      .map(function (k) { return esc(k) + " " + fixed(psi[k], 3); });
    return items.length ? '<span class="tl-psi">PSI: ' + items.join(", ") + "</span>" : "";
  }

  function renderTimeline() {
    var el = $("timeline");
    var entries = S.history.slice().sort(function (a, b) { return (b.at || 0) - (a.at || 0); });
    el.setAttribute("data-entries", String(entries.length));
    if (!entries.length) {
      el.innerHTML = '<li class="empty">No decisions yet: the bandit is exploring. Promotions, rollbacks, pauses, ' +
        "challengers and alarms will appear here and as dashed lines on the charts.</li>";
      return;
    }
    var ref = referenceTime();
    el.innerHTML = entries.map(function (e) {
      var style = actionStyle(e.action);
      var variant = e.variant
        ? '<span class="tl-variant"><span class="swatch" style="background:' + colorOf(e.variant) + '"></span>' + esc(e.variant) + "</span>"
        : '<span class="muted">–</span>';
      var evidence = e.evidence && typeof e.evidence === "object" && Object.keys(e.evidence).length
        ? "<details><summary>evidence</summary><pre>" + esc(JSON.stringify(e.evidence, null, 2)) + "</pre></details>" : "";
      var psi = psiEvidence(e.evidence);
      return '<li class="tl-item" data-action="' + esc(e.action) + '">' +
        '<time datetime="' + (num(e.at) ? new Date(e.at * 1000).toISOString() : "") + '">' + esc(clock(e.at, ref)) + "</time>" +
        '<span class="action" style="background:' + style.color + '">' + esc(e.action || "?") + "</span>" +
        variant +
        '<span class="tl-reason">' + esc(e.reason || "") + psi + evidence + "</span>" +
        '<span class="tl-by">' + (e.by ? "by " + esc(e.by) : "") + "</span></li>";
    }).join("");
  }

  function renderSegments() {
    var panel = $("segments");
    if (!panel) return;
    var segs = (S.state && S.state.segments) || null;
    var keys = segs ? Object.keys(segs) : [];
    panel.hidden = !keys.length;
    $("segments-table").setAttribute("data-segments", String(keys.length));
    $("segments-body").innerHTML = keys.map(function (k) {
      var s = segs[k];
      var cells = Object.keys(s.shares || {}).map(function (v) {
        var m = s.means && num(s.means[v]) ? fixed(s.means[v], 3) : "–";
        return '<span class="seg-share" style="color:' + colorOf(v) + '">' + esc(v) + " " + pct(s.shares[v], 1) +
          "</span> · " + m + " (" + count((s.rewards || {})[v] || 0) + ")";
      }).join("<br>");
      return '<tr data-segment="' + esc(k) + '" data-champion="' + esc(s.champion || "") + '"><td>' + esc(k) + "</td><td>" +
        (s.champion ? '<span class="tag champion">' + esc(s.champion) + "</span>" : '<span class="muted">' + esc(s.mode) + "</span>") +
        "</td><td>" + cells + "</td></tr>";
    }).join("");
  }

  function renderAll() {
    variantOrder(); // colours follow the policy's variant order, whatever is drawn first
    renderOverview();
    renderTable();
    renderSegments();
    renderMonitoring();
    renderCharts();
    renderTimeline();
    document.body.setAttribute("data-state", "ready");
    document.body.setAttribute("data-experiment", S.current || "");
  }

  // ---- status line and banner -------------------------------------------------------------

  function setLive(kind, text) {
    var el = $("live-indicator");
    el.className = "live " + kind;
    el.innerHTML = '<span class="dot"></span><span>' + esc(text) + "</span>";
  }

  function banner(text, isError) {
    var el = $("banner");
    S.errorBanner = !!(text && isError);
    if (!text) { el.hidden = true; el.textContent = ""; return; }
    el.hidden = false;
    el.className = "banner" + (isError ? " error" : "");
    el.textContent = text;
  }

  function fillSelector() {
    var select = $("experiment-select");
    select.innerHTML = S.names.map(function (n) { return '<option value="' + esc(n) + '">' + esc(n) + "</option>"; }).join("");
    select.value = S.current;
    $("experiment-picker").hidden = S.names.length < 2;
  }

  function setUrlExperiment(name) {
    try {
      var url = new URL(window.location.href);
      url.searchParams.set("experiment", name);
      window.history.replaceState(null, "", url.toString());
    } catch (err) { /* file:// pages may refuse; the selector still works */ }
  }

  function requestedExperiment() {
    try { return new URL(window.location.href).searchParams.get("experiment"); } catch (err) { return null; }
  }

  function choose(requested) {
    if (requested && S.names.indexOf(requested) >= 0) { banner(null); return requested; }
    if (requested) banner("No experiment named “" + requested + "”; showing “" + S.names[0] + "”.", false);
    return S.names[0];
  }

  // ---- live mode --------------------------------------------------------------------------

  function fetchJSON(path) {
    return fetch(S.base + path, { cache: "no-store", headers: { accept: "application/json" } }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        if (!r.ok) {
          var msg = body && body.error && body.error.message ? body.error.message : "HTTP " + r.status;
          throw new Error(path + ": " + msg);
        }
        return body;
      });
    });
  }

  function tick() {
    var gen = S.gen;
    var name = S.current;
    var enc = encodeURIComponent(name);
    var since = S.points.length ? "?since=" + S.points[S.points.length - 1].t : "";
    return Promise.all([
      fetchJSON("/v1/experiments/" + enc),
      fetchJSON("/v1/experiments/" + enc + "/series" + since),
    ]).then(function (answers) {
      if (gen !== S.gen) return;
      S.state = answers[0];
      mergePoints(answers[1].points);
      S.history = answers[1].history || S.state.history || [];
      S.updated = Date.now() / 1000;
      if (S.errorBanner) banner(null);
      renderAll();
      setLive("ok", "Live · updated " + clock(S.updated));
    }).catch(function (err) {
      if (gen !== S.gen) return;
      if (window.console) console.error("dashboard refresh failed:", err);
      setLive("error", "Disconnected · retrying");
      if (!S.state) { document.body.setAttribute("data-state", "error"); banner(String(err.message || err), true); }
    }).then(function () {
      if (gen !== S.gen) return;
      clearTimeout(S.timer);
      S.timer = setTimeout(tick, document.hidden ? REFRESH_MS * 5 : REFRESH_MS);
    });
  }

  function switchTo(name) {
    clearTimeout(S.timer);
    resetExperiment(name);
    setUrlExperiment(name);
    if (S.mode === "live") {
      setLive("", "Loading " + name + " …");
      tick();
    } else {
      var data = S.embedded[name];
      S.state = data.state;
      mergePoints(data.points || []);
      S.history = data.history || (data.state && data.state.history) || [];
      renderAll();
    }
  }

  function startLive() {
    setLive("", "Connecting …");
    fetchJSON("/v1/experiments").then(function (body) {
      S.names = (body.experiments || []).map(function (e) { return e.name || e.experiment; });
      if (!S.names.length) {
        document.body.setAttribute("data-state", "error");
        banner("The gateway serves no experiment.", true);
        return;
      }
      S.current = choose(requestedExperiment());
      fillSelector();
      switchTo(S.current);
      startOffPolicy();
    }).catch(function (err) {
      document.body.setAttribute("data-state", "error");
      setLive("error", "Disconnected · retrying");
      banner("Cannot reach the gateway: " + (err.message || err), true);
      setTimeout(startLive, REFRESH_MS * 2);
    });
  }

  // ---- off-policy evaluation (live mode, on demand) ---------------------------------------

  function renderOffPolicy(target, body, error) {
    var out = $("ope-result");
    out.setAttribute("data-target", target);
    out.setAttribute("data-status", error ? "refused" : "ok");
    if (error) { out.innerHTML = '<p class="muted">' + esc(error) + "</p>"; return; }
    var rows = Object.keys(body.estimates || {}).map(function (k) {
      var e = body.estimates[k];
      return '<tr data-estimator="' + esc(k) + '" data-value="' + (num(e.value) ? e.value : "") + '"><td>' + esc(k.toUpperCase()) + "</td><td>" +
        fixed(e.value, 4) + '<span class="ci">[' + fixed(e.ci_low, 3) + ", " + fixed(e.ci_high, 3) + "]</span></td><td>" +
        fixed(e.stderr, 4) + "</td><td>" + fixed(e.ess, 1) + "</td></tr>";
    });
    out.innerHTML = '<table class="variants"><thead><tr><th>Estimator</th><th>Value [95% interval]</th><th>Std. error</th>' +
      "<th>Effective n</th></tr></thead><tbody>" + rows.join("") + '</tbody></table><p class="hint">' + count(body.n) +
      " logged rewards · largest importance weight " + fixed(body.max_weight, 2) + "</p>";
  }

  function estimate(target) {
    var name = S.current;
    return fetchJSON("/v1/experiments/" + encodeURIComponent(name) + "/ope?target=" + encodeURIComponent(target)).then(function (body) {
      if (name === S.current) renderOffPolicy(target, body, null);
    }).catch(function (err) {
      if (name === S.current) renderOffPolicy(target, null, String(err.message || err));
    });
  }

  function startOffPolicy() {
    $("ope").hidden = false;
    $("ope-form").addEventListener("submit", function (ev) { ev.preventDefault(); estimate($("ope-target").value.trim() || "uniform"); });
    var asked = null;
    try { asked = new URL(window.location.href).searchParams.get("ope"); } catch (err) { /* file:// */ }
    if (asked) { $("ope-target").value = asked; estimate(asked); }
  }

  // ---- static mode ------------------------------------------------------------------------

  function startStatic() {
    (cfg.experiments || []).forEach(function (e) {
      var name = (e.state && (e.state.name || e.state.experiment)) || e.name;
      S.embedded[name] = e;
      S.names.push(name);
    });
    setLive("static", "Report · " + (num(cfg.generated_at) ? "generated " + clock(cfg.generated_at, cfg.generated_at) + " " + new Date(cfg.generated_at * 1000).toLocaleDateString() : "static"));
    if (!S.names.length) { banner("This report holds no experiment.", true); document.body.setAttribute("data-state", "error"); return; }
    S.current = choose(requestedExperiment());
    fillSelector();
    switchTo(S.current);
  }

  $("experiment-select").addEventListener("change", function (ev) { banner(null); switchTo(ev.target.value); });

  window.gatewayDashboard = { lgamma: lgamma, logBeta: logBeta, betaPdf: betaPdf, studentTPdf: studentTPdf, state: S };

  if (typeof Plotly === "undefined") {
    document.body.setAttribute("data-state", "error");
    banner("plotly.js did not load, so the charts cannot be drawn.", true);
    return;
  }
  if (S.mode === "static") startStatic(); else startLive();
})();
