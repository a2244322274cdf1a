// candlekeep dashboard: reads the API's JSON and draws it. No framework, no build step.
//
// Every value from the API goes into the page as text (el() appends strings as text nodes;
// attributes are set with setAttribute, never href/src from data): symbols, job names and
// error messages come from outside and must never become markup.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const REFRESH_S = numberParam("refresh", 10, 1, 3600);
  // A request that takes longer than this counts as "not answering".
  const TIMEOUT_MS = Math.min(Math.max(2 * REFRESH_S, 2), 10) * 1000;
  const RECENT_RUNS = 200;
  const STRIP_RUNS = 12;
  const GAP_ROWS = 12;
  const FAILURE_ROWS = 8;

  function numberParam(name, fallback, lo, hi) {
    const text = params.get(name);
    const n = Number(text);
    if (text === null || text === "" || !Number.isFinite(n)) return fallback;
    return Math.min(Math.max(n, lo), hi);
  }

  // -- DOM --------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function statusClass(status) {
    return "status-" + String(status || "unknown").toLowerCase().replace(/[^a-z_]/g, "");
  }

  function pill(status, text) {
    return el("span", { class: "pill " + statusClass(status) }, text ?? status ?? "—");
  }

  function show(section, selector, visible) {
    const node = section.querySelector(selector);
    if (node) node.hidden = !visible;
  }

  // -- formatting -------------------------------------------------------------------------

  function duration(ms) {
    if (ms === null || ms === undefined) return "—";
    let s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60);
    if (d) return h ? `${d}d ${h}h` : `${d}d`;
    if (h) return m ? `${h}h ${m}m` : `${h}h`;
    return `${m}m`;
  }

  function utc(ms) {
    if (ms === null || ms === undefined) return "—";
    return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  // "2026-12-01 04:56 → 04:57": the end's date only when it differs
  function span(startMs, endMs) {
    const a = utc(startMs).slice(0, 16);
    const b = utc(endMs).slice(0, 16);
    if (a === b) return a;
    return `${a} → ${a.slice(0, 10) === b.slice(0, 10) ? b.slice(11) : b}`;
  }

  function clock(ms) {
    return new Date(ms).toISOString().slice(11, 19) + " UTC";
  }

  function relative(ms) {
    if (ms === null || ms === undefined) return "—";
    const delta = ms - Date.now();
    return delta >= 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
  }

  function count(n) {
    return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
  }

  function percent(p) {
    if (p === null || p === undefined) return "—";
    const digits = p >= 99.995 || p === 0 ? 0 : p >= 99 ? 2 : 1;
    return `${Number(p).toFixed(digits)}%`;
  }

  function firstLine(text) {
    return String(text ?? "").split("\n").find((line) => line.trim()) ?? "";
  }

  function seriesName(row) {
    return `${row.source}:${row.symbol}:${row.timeframe}`;
  }

  const TF_UNIT_MS = { m: 60e3, h: 3600e3, d: 86400e3, w: 604800e3 };
  function timeframeMs(tf) {
    const m = /^(\d+)([mhdw])$/.exec(tf);
    return m ? Number(m[1]) * TF_UNIT_MS[m[2]] : Number.MAX_SAFE_INTEGER;
  }

  // -- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(path, message, status) {
      super(`${path}: ${message}`);
      this.status = status;
    }
  }

  async function get(path, accept = [200]) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const resp = await fetch(new URL(path, document.baseURI), {
        credentials: "same-origin", cache: "no-store",
        headers: { Accept: "application/json" }, signal: abort.signal,
      });
      if (!accept.includes(resp.status)) {
        const detail = await resp.json().then((body) => body.detail, () => null);
        const why = typeof detail === "string" ? `: ${detail.slice(0, 300)}` : "";
        throw new ApiError(path, `HTTP ${resp.status}${why}`, resp.status);
      }
      return await resp.json();
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (err.name === "AbortError") {
        throw new ApiError(path, `no answer within ${TIMEOUT_MS / 1000} s`, 0);
      }
      throw new ApiError(path, err.message || "no answer", 0);
    } finally {
      clearTimeout(timer);
    }
  }

  // -- panels -----------------------------------------------------------------------------

  function componentName(c) {
    if (c.kind === "state_db") return "state DB";
    return c.kind === c.name ? c.name : `${c.kind} ${c.name}`;
  }

  function renderHealth(section, health) {
    const overall = health.status;
    section.className = "banner " + statusClass(overall);
    document.getElementById("overall").textContent = String(overall).toUpperCase();
    const items = health.components.map((c) => el("li", {
      class: "component " + statusClass(c.status), "data-component": `${c.kind}:${c.name}`,
      title: `${c.kind} ${c.name}: ${c.status}\n${c.detail}`
        + (c.latency_ms === null ? "" : `\n${c.latency_ms.toFixed(1)} ms`),
    }, el("span", { class: "dot" }), el("span", { class: "component-name" }, componentName(c)),
    // what is fine needs no words on the banner; what is not says why
    c.status === "ok" ? null : el("span", { class: "component-detail" }, firstLine(c.detail))));
    document.getElementById("components").replaceChildren(...items);
    return true;
  }

  function runStrip(runs) {
    const cells = runs.slice(0, STRIP_RUNS).reverse().map((r) => el("span", {
      class: "run " + statusClass(r.status),
      title: `${utc(r.started_at ?? r.scheduled_for)} · ${r.status}`
        + (r.error ? ` · ${firstLine(r.error)}` : ""),
    }));
    return el("span", { class: "strip", "aria-label": `${runs.length} recent runs` }, cells);
  }

  function lastRun(j) {
    const at = j.last_finished_at ?? j.last_started_at ?? j.last_scheduled_for;
    const ms = j.last_duration_ms;
    const took = ms === null ? "" : ` · took ${ms < 1000 ? `${ms} ms` : duration(ms)}`;
    return [pill(j.last_status), el("small", { title: utc(at) + took }, relative(at))];
  }

  function renderJobs(section, { jobs, runs }) {
    const byJob = new Map();
    for (const run of runs.items) {
      if (!byJob.has(run.job)) byJob.set(run.job, []);
      byJob.get(run.job).push(run);
    }
    const rows = jobs.jobs.map((j) => el("tr", { "data-job": j.name },
      el("td", { class: "job-name" }, el("strong", {}, j.name), el("small", {}, j.type)),
      el("td", { class: "schedule", title: j.schedule || "" },
        j.enabled ? j.schedule_words : el("span", { class: "muted" }, "disabled")),
      el("td", {}, runStrip(byJob.get(j.name) || [])),
      el("td", { class: "last" }, j.last_status ? lastRun(j)
        : el("span", { class: "muted" }, "never run")),
      el("td", { class: "next", title: utc(j.next_run) },
        j.next_run ? relative(j.next_run) : el("span", { class: "muted" }, "—"))));
    document.getElementById("jobs").replaceChildren(...rows);
    return rows.length > 0;
  }

  function heatCell(row, verdict) {
    const ratio = row.age_ms === null || row.age_ms === undefined || !row.threshold_ms
      ? 1 : Math.min(row.age_ms / row.threshold_ms, 1);
    const lines = [
      `${seriesName(row)} (store ${row.store})`,
      `status: ${row.status}`,
      `newest candle: ${row.newest_utc ?? "none"}`,
      `age: ${duration(row.age_ms)} of ${duration(row.threshold_ms)} allowed`,
      `rows: ~${count(row.rows_estimate)}`,
    ];
    if (row.detail) lines.push(row.detail);
    if (verdict) lines.push(`last check: ${verdict.status} since ${utc(verdict.status_since)}`);
    const cell = el("td", {
      class: "cell " + statusClass(row.status), "data-series": seriesName(row),
      title: lines.join("\n"),
    }, row.status === "missing" ? "none" : duration(row.age_ms));
    cell.style.setProperty("--heat", ratio.toFixed(3));
    return cell;
  }

  function renderFreshness(section, { series, verdicts }) {
    const stored = new Map(verdicts.filter((v) => v.kind === "series")
      .map((v) => [`${v.store}|${v.subject}`, v]));
    const timeframes = [...new Set(series.map((s) => s.timeframe))]
      .sort((a, b) => timeframeMs(a) - timeframeMs(b));
    const groups = new Map();
    for (const s of series) {
      const key = `${s.source}\u0000${s.symbol}`;
      if (!groups.has(key)) groups.set(key, { source: s.source, symbol: s.symbol, cells: {} });
      groups.get(key).cells[s.timeframe] = s;
    }
    const head = el("tr", {}, el("th", { class: "corner" }, "series"),
      timeframes.map((tf) => el("th", { scope: "col" }, tf)));
    const body = [...groups.values()].map((g) => el("tr", {},
      el("th", { scope: "row" }, el("span", { class: "symbol" }, g.symbol),
        el("small", {}, g.source)),
      timeframes.map((tf) => {
        const s = g.cells[tf];
        return s ? heatCell(s, stored.get(`${s.store}|${seriesName(s)}`))
          : el("td", { class: "cell none" });
      })));
    const table = series.length
      ? el("table", {}, el("thead", {}, head), el("tbody", {}, body)) : "";
    document.getElementById("heatmap").replaceChildren(table);
    for (const node of section.querySelectorAll("[data-count]")) {
      const n = series.filter((s) => s.status === node.dataset.count).length;
      node.textContent = n ? `${n} ` : "";
    }
    const datasets = verdicts.filter((v) => v.kind === "dataset").map((v) => el("li", {
      class: "dataset " + statusClass(v.status), "data-dataset": `${v.store}.${v.subject}`,
      title: [`newest: ${v.newest_utc ?? "none"}`, v.detail].filter(Boolean).join("\n"),
    }, el("span", { class: "dot" }), `${v.store}.${v.subject}`,
    el("small", {}, v.status === "missing" ? "missing" : duration(v.age_ms))));
    document.getElementById("datasets").replaceChildren(...datasets);
    return series.length + datasets.length > 0;
  }

  function renderCoverage(section, rows) {
    const items = rows.map((c) => {
      const nothing = c.first_ms === null;
      const pct = Math.max(0, Math.min(100, Number(c.coverage_pct) || 0));
      const fill = el("span", { class: "fill" });
      fill.style.width = `${pct}%`;
      const low = nothing ? " nothing" : pct < 99 ? " low" : pct < 100 ? " partial" : "";
      const note = nothing ? "nothing stored yet"
        : c.missing ? `${count(c.missing)} missing` : "";
      return el("li", { "data-series": c.series, class: "bar-row" + low,
        title: `${c.series} (store ${c.store})\n${utc(c.first_ms)} → ${utc(c.last_ms)}\n`
          + `${count(c.stored)}${c.stored_exact ? "" : " (at most)"} of ${count(c.expected)} `
          + `candles, ${count(c.missing)} missing, ${count(c.confirmed_empty)} confirmed empty, `
          + `${count(c.open_gaps)} open gaps` },
      el("span", { class: "bar-label" }, `${c.symbol} ${c.timeframe}`,
        el("small", {}, c.source)),
      el("span", { class: "bar" }, fill),
      el("span", { class: "bar-figure" }, nothing ? "—" : percent(c.coverage_pct)),
      el("small", { class: "bar-note" }, note));
    });
    document.getElementById("coverage").replaceChildren(...items);
    return items.length > 0;
  }

  function renderGaps(section, { gaps, summary }) {
    const oldest = summary.oldest_open;
    const figures = [
      ["open", count(summary.open), summary.failed ? `${count(summary.failed)} failed` : ""],
      ["repaired 24 h", count(summary.repaired_24h), ""],
      ["confirmed empty", count(summary.confirmed_empty), ""],
      ["oldest open", oldest ? `${duration(summary.oldest_open_age_ms)} ago` : "—",
        oldest ? `${oldest.symbol} ${oldest.timeframe}` : ""],
    ].map(([label, value, note]) => el("div", { class: "figure" },
      el("dt", {}, label), el("dd", {}, value), note ? el("small", {}, note) : null));
    document.getElementById("gap-summary").replaceChildren(...figures);
    const items = gaps.items.map((g) => el("li", { "data-series": g.series, class: "gap" },
      el("span", { class: "gap-series" }, `${g.symbol} ${g.timeframe}`,
        el("small", {}, g.source)),
      el("span", { class: "gap-range", title: `${utc(g.gap_start)} → ${utc(g.gap_end)}` },
        span(g.gap_start, g.gap_end)),
      el("span", { class: "gap-size" }, `${count(g.candles)} candle${g.candles === 1 ? "" : "s"}`
        + (g.attempts ? ` · ${g.attempts} attempts` : "")),
      el("small", { class: "gap-detected" }, `found ${relative(g.detected_at)}`),
      g.last_error ? el("p", { class: "error-text" }, g.last_error) : null));
    document.getElementById("gaps").replaceChildren(...items);
    return items.length > 0 || figures.length > 0;
  }

  function renderFailures(section, page) {
    const items = page.items.map((r) => el("li", { class: "failure", "data-job": r.job },
      el("div", { class: "failure-head" }, pill(r.status),
        el("strong", {}, r.job),
        el("small", { title: utc(r.finished_at ?? r.started_at) },
          relative(r.finished_at ?? r.started_at ?? r.scheduled_for)),
        r.attempt > 1 ? el("small", { class: "muted" }, `attempt ${r.attempt}`) : null,
        r.node ? el("small", { class: "muted" }, r.node) : null),
      el("pre", { class: "error-text" }, r.error || "(no error recorded)")));
    document.getElementById("failures").replaceChildren(...items);
    return items.length > 0;
  }

  const PANELS = [
    { id: "health", render: renderHealth,
      load: () => get("system/health", [200, 503]) },
    { id: "jobs", render: renderJobs,
      load: async () => {
        const [jobs, runs] = await Promise.all([get("jobs"), get(`runs?limit=${RECENT_RUNS}`)]);
        return { jobs, runs };
      } },
    { id: "freshness", render: renderFreshness,
      load: async () => {
        const [series, verdicts] = await Promise.all([get("ingestion/status"), get("freshness")]);
        return { series, verdicts };
      } },
    { id: "coverage", render: renderCoverage, load: () => get("coverage") },
    { id: "gaps", render: renderGaps,
      load: async () => {
        const [gaps, summary] = await Promise.all([
          get(`gaps?status=open&limit=${GAP_ROWS}`), get("gaps/summary")]);
        return { gaps, summary };
      } },
    { id: "failures", render: renderFailures,
      load: () => get(`runs?status=failed&status=timed_out&status=abandoned&limit=${FAILURE_ROWS}`) },
  ];

  // -- refreshing -------------------------------------------------------------------------

  let lastComplete = null;
  let failingSince = null;

  function section(panel) {
    return document.querySelector(`[data-panel="${panel.id}"]`);
  }

  function settle(panel, result) {
    const sec = section(panel);
    const problem = sec.querySelector(".panel-error");
    if (result.status === "fulfilled") {
      try {
        const hasContent = panel.render(sec, result.value);
        show(sec, ".empty", !hasContent);
        problem.hidden = true;
        sec.classList.remove("failed");
        return null;
      } catch (err) {
        const reason = new ApiError(panel.id, `unreadable answer (${err.message})`, null);
        result = { status: "rejected", reason };
      }
    }
    problem.textContent = `could not load: ${result.reason.message}`;
    problem.hidden = false;
    sec.classList.add("failed");
    return result.reason;
  }

  function showConnection(errors) {
    const box = document.getElementById("conn-error");
    document.body.classList.toggle("degraded", errors.length > 0);
    if (!errors.length) {
      box.hidden = true;
      failingSince = null;
      return;
    }
    failingSince ??= Date.now();
    const signIn = errors.some((e) => e.status === 401 || e.status === 403);
    const silent = errors.every((e) => e.status === 0);
    const what = signIn ? "Not signed in (or the session expired)."
      : `The API ${silent ? "is not answering" : "reports errors"} since `
        + `${clock(failingSince)}: ${errors[0].message}`
        + (errors.length > 1 ? ` (and ${errors.length - 1} more)` : "") + ".";
    const since = lastComplete ? ` Figures below are from ${clock(lastComplete)}.` : "";
    const title = signIn ? "Sign in needed" : silent ? "Connection problem" : "API problem";
    box.replaceChildren(el("strong", {}, title),
      " ", what, since, signIn ? " " : "",
      signIn ? el("a", { href: "login?next=" + encodeURIComponent(location.pathname
        + location.search) }, "Sign in") : "");
    box.hidden = false;
  }

  async function refresh() {
    const results = await Promise.allSettled(PANELS.map((p) => p.load()));
    const errors = PANELS.map((p, i) => settle(p, results[i])).filter(Boolean);
    const now = Date.now();
    if (!errors.length) lastComplete = now;
    const updated = document.getElementById("updated");
    updated.textContent = lastComplete ? `updated ${clock(lastComplete)}` : "not loaded yet";
    updated.setAttribute("data-updated-at", String(lastComplete ?? ""));
    showConnection(errors);
    document.body.classList.remove("loading");
    setTimeout(refresh, REFRESH_S * 1000);
  }

  document.getElementById("cadence").textContent = `refreshes every ${REFRESH_S} s`;
  refresh();
})();
