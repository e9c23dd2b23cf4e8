// The dashboard page (api/web.py; docs/DASHBOARDS.md, "The page"). Plain browser JavaScript, no build step:
// it asks the query API what any client asks, with the read key the user entered (kept in session storage),
// draws the tiles with the vendored Apache ECharts, follows GET /api/v1/live and reloads every 30 s.
// Every number a tile shows is also in its data table (the "Data" fold) with the exact value in data-value.
"use strict";

(() => {
  const KEY_STORAGE = "analytics.readKey";
  const REFRESH_MS = 30000;
  const MAX_FILTERS = 8;
  const LIVE_RETRY_MS = 2000;
  const VERDICTS = { win: "win", loss: "loss", not_significant_yet: "not yet", srm: "check split" };
  const PALETTE = ["#3558d6", "#22a559", "#e8710a", "#9334e6", "#d93025", "#12a4af", "#f9ab00", "#5f6368"];

  const $ = (id) => document.getElementById(id);
  const state = {
    key: sessionStorage.getItem(KEY_STORAGE) || "",
    dashboards: [],
    metrics: {},
    dimensions: [],
    view: { dashboard: "", range: "", timezone: "", filters: [] },
    seq: 0,
    loading: false,
    answer: null,
    charts: new Map(),
    liveAbort: null,
    liveFrames: 0,
    liveApprox: {},
    timer: null,
  };

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, body) {
      super(describeError(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describeError(status, body) {
    if (body && typeof body.error === "string") {
      const where = body.field ? ` (field ${body.field}${body.rule ? `, rule ${body.rule}` : ""})` : "";
      return body.error.includes("(rule:") ? body.error : body.error + where;
    }
    return `the API answered ${status}`;
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, {
        ...options,
        headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json" },
      });
    } catch (err) {
      throw new ApiError(0, { error: `the API cannot be reached (${err.message})` });
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (response.status === 401) throw new AuthError(describeError(401, body));
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // ---- formatting -------------------------------------------------------------------------------------------
  const nf0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const pct1 = new Intl.NumberFormat("en-US", { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const pct2 = new Intl.NumberFormat("en-US", { style: "percent", minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function fmt(metric, value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const kind = (state.metrics[metric] || {}).kind;
    if (kind === "ratio") return pct1.format(value);
    if (kind === "sum") return nf2.format(value);
    return nf0.format(value);
  }

  // Axis labels: short (12k, 1.2M), percentages for ratios.
  const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  function axis(metric, value) {
    return (state.metrics[metric] || {}).kind === "ratio" ? pct1.format(value) : compact.format(value);
  }

  function signedPct(value) {
    if (value === null || value === undefined) return "–";
    return (value > 0 ? "+" : "") + pct1.format(value);
  }

  function timeFormat(granularity, tz) {
    const options = { timeZone: tz, month: "short", day: "numeric" };
    if (granularity === "minute" || granularity === "hour") Object.assign(options, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    return new Intl.DateTimeFormat("en-GB", options);
  }

  function when(iso, tz) {
    if (!iso) return "–";
    return new Intl.DateTimeFormat("en-GB", {
      timeZone: tz, year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).format(new Date(iso));
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ---- the view: dashboard, range, time zone, filters (kept in the address's #fragment) ----------------------
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.view.dashboard = params.get("dashboard") || "";
    state.view.range = params.get("range") || "";
    state.view.timezone = params.get("timezone") || "";
    state.view.filters = params.getAll("filter").slice(0, MAX_FILTERS);
  }

  function writeHash() {
    const params = new URLSearchParams();
    params.set("dashboard", state.view.dashboard);
    params.set("range", state.view.range);
    params.set("timezone", state.view.timezone);
    for (const f of state.view.filters) params.append("filter", f);
    history.replaceState(null, "", `#${params}`);
  }

  function setupZones() {
    const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
    const list = $("zones");
    for (const zone of ["UTC", ...zones]) list.append(el("option", { value: zone }));
  }

  function showLogin(message) {
    stopLive();
    clearInterval(state.timer);
    state.key = "";
    sessionStorage.removeItem(KEY_STORAGE);
    $("controls").hidden = true;
    $("banner").hidden = true;
    $("filters").replaceChildren();
    $("status").textContent = "";
    disposeCharts();
    $("tiles").replaceChildren();
    $("login").hidden = false;
    const error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("key").focus();
  }

  function banner(message) {
    $("banner").hidden = !message;
    $("banner").textContent = message || "";
  }

  async function start() {
    $("login").hidden = true;
    let list;
    let catalogue;
    try {
      [list, catalogue] = await Promise.all([api("api/v1/dashboards"), api("api/v1/metrics")]);
    } catch (err) {
      if (err instanceof AuthError) {
        showLogin(`This read key was not accepted: ${err.message}. Check the key (each tenant has its own) and try again.`);
      } else {
        banner(`The dashboards cannot be listed: ${err.message}. Reload the page to try again.`);
      }
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, state.key);
    state.dashboards = list.dashboards;
    state.metrics = Object.fromEntries(catalogue.metrics.map((m) => [m.name, m]));
    state.dimensions = catalogue.dimensions.map((d) => d.name);
    if (!state.dashboards.length) {
      banner("No dashboard is defined: add a YAML file to dashboards/ (docs/DASHBOARDS.md).");
      return;
    }
    const picker = $("dashboard");
    picker.replaceChildren(...state.dashboards.map((d) => el("option", { value: d.id, text: d.title })));
    $("filter-dimension").replaceChildren(...state.dimensions.map((d) => el("option", { value: d, text: d })));
    if (!state.dashboards.some((d) => d.id === state.view.dashboard)) state.view.dashboard = state.dashboards[0].id;
    applyDefaults(false);
    $("controls").hidden = false;
    syncControls();
    await load();
    startLive();
    clearInterval(state.timer);
    state.timer = setInterval(() => {
      if (!document.hidden && !state.loading) load({ quiet: true });
    }, REFRESH_MS);
  }

  function current() {
    return state.dashboards.find((d) => d.id === state.view.dashboard);
  }

  function applyDefaults(force) {
    const board = current();
    if (force || !state.view.range) state.view.range = board.range;
    if (force || !state.view.timezone) state.view.timezone = board.timezone;
  }

  function syncControls() {
    const board = current();
    $("dashboard").value = board.id;
    $("title").textContent = board.title;
    $("subtitle").textContent = board.description || "";
    const custom = state.view.range.includes("/");
    $("range").value = custom ? "custom" : state.view.range;
    $("custom").hidden = !custom;
    if (custom) {
      // datetime-local wants YYYY-MM-DDTHH:MM; a range of dates starts and ends at midnight.
      const local = (text) => (text.length === 10 ? `${text}T00:00` : text.slice(0, 16));
      const [a, b] = state.view.range.split("/");
      $("custom-start").value = local(a);
      $("custom-end").value = local(b);
    }
    $("timezone").value = state.view.timezone;
    renderChips();
    writeHash();
  }

  function renderChips() {
    $("filters").replaceChildren(
      ...state.view.filters.map((f, i) => {
        const [dimension, op, values] = splitFilter(f);
        const label = `${dimension} ${{ eq: "is", in: "is one of", not_in: "is not one of" }[op] || op} ${values}`;
        const remove = el("button", { type: "button", "aria-label": `Remove filter ${label}`, text: "×" });
        remove.addEventListener("click", () => {
          state.view.filters.splice(i, 1);
          syncControls();
          load();
        });
        return el("span", { class: "chip", "data-filter": f }, label, remove);
      }),
    );
  }

  function splitFilter(text) {
    const first = text.indexOf(":");
    const second = text.indexOf(":", first + 1);
    return [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
  }

  function addFilter(dimension, op, value) {
    value = value.trim();
    if (!value) {
      banner("A filter needs a value (a,b,c for “is one of” and “is not one of”).");
      return;
    }
    if (state.view.filters.length >= MAX_FILTERS) {
      banner(`At most ${MAX_FILTERS} filters: remove one first.`);
      return;
    }
    const text = `${dimension}:${op}:${value}`;
    if (!state.view.filters.includes(text)) state.view.filters.push(text);
    syncControls();
    load();
  }

  function bindControls() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("key").value.trim();
      $("key").value = "";
      if (state.key) start();
    });
    $("signout").addEventListener("click", () => showLogin(""));
    $("controls").addEventListener("submit", (event) => event.preventDefault());
    $("dashboard").addEventListener("change", () => {
      state.view.dashboard = $("dashboard").value;
      state.view.filters = [];
      applyDefaults(true);
      syncControls();
      load();
    });
    $("range").addEventListener("change", () => {
      const value = $("range").value;
      if (value === "custom") {
        $("custom").hidden = false;
        const end = new Date();
        const start = new Date(end.getTime() - 7 * 86400000);
        const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
        if (!$("custom-start").value) $("custom-start").value = local(start);
        if (!$("custom-end").value) $("custom-end").value = local(end);
        return;
      }
      state.view.range = value;
      syncControls();
      load();
    });
    $("custom-apply").addEventListener("click", () => {
      const a = $("custom-start").value;
      const b = $("custom-end").value;
      if (!a || !b) {
        banner("A custom range needs a start and an end.");
        return;
      }
      state.view.range = `${a}/${b}`;
      syncControls();
      load();
    });
    $("timezone").addEventListener("change", () => {
      const zone = $("timezone").value.trim();
      if (!zone || zone === state.view.timezone) return;
      state.view.timezone = zone;
      syncControls();
      load();
    });
    $("filter-apply").addEventListener("click", () => {
      addFilter($("filter-dimension").value, $("filter-op").value, $("filter-value").value);
      $("filter-value").value = "";
    });
    $("filter-value").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        $("filter-apply").click();
      }
    });
    window.addEventListener("resize", () => state.charts.forEach((chart) => chart.resize()));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.key && state.answer) {
        const age = Date.now() - state.loadedAt;
        if (age > REFRESH_MS) load({ quiet: true });
      }
    });
  }

  // ---- loading ------------------------------------------------------------------------------------------------
  async function load(options = {}) {
    const board = current();
    if (!board) return;
    const seq = ++state.seq;
    state.loading = true;
    $("tiles").setAttribute("aria-busy", "true");
    ensureTiles(board);
    for (const tile of $("tiles").children) tile.classList.add("loading");
    if (!options.quiet) $("status").textContent = "Loading…";
    const params = new URLSearchParams({ range: state.view.range, timezone: state.view.timezone });
    for (const f of state.view.filters) params.append("filter", f);
    let answer;
    try {
      answer = await api(`api/v1/dashboards/${encodeURIComponent(board.id)}?${params}`);
    } catch (err) {
      if (seq !== state.seq) return;
      state.loading = false;
      $("tiles").setAttribute("aria-busy", "false");
      for (const tile of $("tiles").children) tile.classList.remove("loading");
      if (err instanceof AuthError) {
        showLogin(`This read key is no longer accepted: ${err.message}.`);
        return;
      }
      banner(`The dashboard could not be loaded: ${err.message}.`);
      $("status").textContent = state.answer ? "Showing the last numbers loaded." : "";
      if (!state.answer) for (const tile of $("tiles").children) setState(tile, "error", err.message);
      return;
    }
    if (seq !== state.seq) return; // a newer load is on its way
    state.loading = false;
    state.loadedAt = Date.now();
    state.answer = answer;
    $("tiles").setAttribute("aria-busy", "false");
    banner("");
    renderAnswer(answer);
  }

  function ensureTiles(board) {
    const grid = $("tiles");
    const ids = [...grid.children].map((t) => t.dataset.tile).join(",");
    if (grid.dataset.dashboard === board.id && ids === board.tiles.map((t) => t.id).join(",")) return;
    disposeCharts();
    state.answer = null;
    grid.dataset.dashboard = board.id;
    grid.replaceChildren(
      ...board.tiles.map((t) => {
        const info = el("button", { class: "info", type: "button", "aria-label": "Freshness and source", text: "i" });
        const tile = el(
          "article",
          { class: `tile kind-${t.kind}`, "data-tile": t.id, "data-kind": t.kind, style: `grid-column: span ${t.width}` },
          el("header", {}, el("h3", { text: t.title }), el("span", { class: "grain" }), info, el("div", { class: "popover", role: "tooltip" })),
          el("div", { class: "body" }),
        );
        setState(tile, "loading", "Loading…");
        return tile;
      }),
    );
  }

  function setState(tile, kind, message) {
    disposeChart(tile.dataset.tile);
    tile.dataset.state = kind;
    tile.querySelector(".body").replaceChildren(el("div", { class: `state ${kind === "error" ? "error" : ""}`, text: message }));
  }

  function disposeChart(id) {
    for (const key of [id, `${id}:live`]) {
      const chart = state.charts.get(key);
      if (chart) {
        chart.dispose();
        state.charts.delete(key);
      }
    }
  }

  function disposeCharts() {
    state.charts.forEach((chart) => chart.dispose());
    state.charts.clear();
  }

  function renderAnswer(answer) {
    const tz = answer.range.timezone;
    const r = answer.range;
    const cache = answer.cache.hit ? `cache hit (${Math.round(answer.cache.age_s)} s old)` : "computed now";
    const status = $("status");
    status.textContent =
      `${when(r.start, tz)} – ${when(r.end, tz)} (${tz})` +
      (r.open ? `, counted until ${when(r.counted_until, tz)}` : "") +
      ` · updated ${new Date().toLocaleTimeString("en-GB", { hourCycle: "h23" })} · ${cache} · ${Math.round(answer.elapsed_ms)} ms`;
    status.dataset.start = r.start;
    status.dataset.end = r.end;
    status.dataset.timezone = tz;
    status.dataset.computedAt = answer.computed_at;
    for (const tile of answer.tiles) {
      const node = $("tiles").querySelector(`[data-tile="${CSS.escape(tile.id)}"]`);
      if (!node) continue;
      node.classList.remove("loading");
      node.querySelector(".popover").textContent = provenanceText(tile, tz);
      node.querySelector(".grain").textContent = grainText(tile);
      node.dataset.computedAt = answer.computed_at;
      try {
        renderTile(node, tile, tz);
      } catch (err) {
        setState(node, "error", `This tile cannot be drawn: ${err.message}`);
      }
    }
  }

  function grainText(tile) {
    const asked = tile.asked && tile.asked[0];
    if (!asked) return tile.kind === "live" ? "last 5 minutes" : "";
    if (tile.kind === "series" || tile.kind === "funnel") return asked.granularity ? `by ${asked.granularity}` : "";
    return "";
  }

  function provenanceText(tile, tz) {
    const p = tile.provenance;
    if (!p) return tile.error ? `Not answered: ${tile.error.error || tile.error}` : "";
    const lines = [`Source: ${p.sources.join(", ") || "–"} (${tile.endpoint})`];
    if (p.watermark) lines.push(`Warehouse loaded up to ${when(p.watermark, tz)}`);
    if (p.as_of) lines.push(`As of ${when(p.as_of, tz)}`);
    if (p.realtime) lines.push("Recent minutes from the realtime layer");
    for (const [metric, a] of Object.entries(p.approximate || {})) {
      if (a && a.relative_error !== undefined) lines.push(`${metric}: estimated (${a.method}), within ±${pct1.format(a.relative_error)}`);
    }
    const c = p.cache;
    if (c) lines.push(c.hit ? `Cached answer, ${Math.round(c.age_s)} s old` : "Computed for this load");
    for (const note of [...(p.incomplete || []), ...(p.notes || [])]) lines.push(`Note: ${note}`);
    return lines.join("\n");
  }

  function renderTile(node, tile, tz) {
    if (tile.error) {
      setState(node, "error", `Not answered: ${tile.error.error || JSON.stringify(tile.error)}`);
      return;
    }
    node.dataset.state = "ready";
    const render = { series: renderSeries, number: renderNumber, breakdown: renderBreakdown, funnel: renderFunnel, experiment: renderExperiment, live: renderLive }[tile.kind];
    if (!render) {
      setState(node, "error", `This page cannot draw ${tile.kind} tiles yet.`);
      return;
    }
    render(node, tile, tz);
  }

  function chartFor(node, key, height) {
    const id = key || node.dataset.tile;
    let chart = state.charts.get(id);
    const body = node.querySelector(".body");
    let holder = body.querySelector(key ? ".live-chart" : ".chart");
    if (!chart || !holder || chart.getDom() !== holder) {
      if (chart) chart.dispose();
      holder = el("div", { class: key ? "live-chart" : "chart" });
      if (height) holder.style.height = `${height}px`;
      chart = echarts.init(holder, null, { renderer: "canvas" });
      state.charts.set(id, chart);
    }
    return [chart, holder];
  }

  function dataTable(headers, rows) {
    const table = el(
      "table",
      {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el(
        "tbody",
        {},
        rows.map((cells) =>
          el(
            "tr",
            {},
            cells.map((c, i) =>
              c && typeof c === "object" && !(c instanceof Node)
                ? el(i ? "td" : "th", { "data-value": c.value, scope: i ? null : "row" }, c.text)
                : el(i ? "td" : "th", { scope: i ? null : "row" }, c),
            ),
          ),
        ),
      ),
    );
    return el("details", { class: "data" }, el("summary", { text: "Data" }), el("div", { class: "table-wrap" }, table));
  }

  // No rows, or only zeros and nulls (the query API answers every bucket of the range).
  function nothing(answer) {
    return answer.rows.every((r) => answer.metrics.every((m) => !r.values[m]));
  }

  function emptyState(node, text) {
    setState(node, "empty", text || "No data in this range.");
    node.dataset.state = "empty";
  }

  // ---- series: metrics per bucket, stacked by a dimension ------------------------------------------------
  function renderSeries(node, tile, tz) {
    const answer = tile.answers[0];
    if (nothing(answer)) return emptyState(node);
    const group = answer.group_by[0];
    const label = timeFormat(answer.granularity, tz);
    const buckets = [...new Set(answer.rows.map((r) => r.bucket))].sort();
    const index = new Map(buckets.map((b, i) => [b, i]));
    const series = new Map(); // name -> {metric, values}
    for (const row of answer.rows) {
      for (const metric of answer.metrics) {
        let name = metric;
        if (group) {
          const value = row.rest ? "other" : String(row.dimensions[group]);
          name = answer.metrics.length > 1 ? `${value} · ${metric}` : value;
        }
        if (!series.has(name)) {
          const additive = (state.metrics[metric] || {}).additive;
          series.set(name, { metric, values: buckets.map(() => (additive ? 0 : null)) });
        }
        series.get(name).values[index.get(row.bucket)] = row.values[metric];
      }
    }
    const approx = (tile.provenance && tile.provenance.approximate) || {};
    const names = [...series.keys()];
    const categories = buckets.map((b) => label.format(new Date(b)));
    const option = {
      animation: false,
      color: PALETTE,
      grid: { left: 8, right: 12, top: names.length > 1 ? 30 : 12, bottom: 8, containLabel: true },
      tooltip: { trigger: "axis", valueFormatter: (v) => fmt(answer.metrics[0], v) },
      legend: names.length > 1 ? { type: "scroll", top: 0 } : { show: false },
      xAxis: { type: "category", data: categories, boundaryGap: Boolean(group) },
      yAxis: { type: "value", axisLabel: { formatter: (v) => axis(answer.metrics[0], v) } },
      series: names.map((name) => ({
        name,
        type: group ? "bar" : "line",
        stack: group ? "total" : undefined,
        showSymbol: buckets.length < 40,
        areaStyle: group ? undefined : { opacity: 0.08 },
        data: series.get(name).values,
      })),
    };
    // Estimated metrics (HyperLogLog) carry their error bar: value ± relative error at each bucket.
    for (const name of names) {
      const { metric, values } = series.get(name);
      const error = approx[metric] && approx[metric].relative_error;
      if (!error || group) continue;
      option.series.push({
        name: `${name} error`,
        type: "custom",
        tooltip: { show: false },
        renderItem: (params, api) => {
          const i = api.value(0);
          const v = values[i];
          if (v === null) return null;
          const low = api.coord([i, v * (1 - error)]);
          const high = api.coord([i, v * (1 + error)]);
          const style = { stroke: "#5f6368", lineWidth: 1 };
          return {
            type: "group",
            children: [
              { type: "line", shape: { x1: low[0], y1: low[1], x2: high[0], y2: high[1] }, style },
              { type: "line", shape: { x1: low[0] - 3, y1: low[1], x2: low[0] + 3, y2: low[1] }, style },
              { type: "line", shape: { x1: high[0] - 3, y1: high[1], x2: high[0] + 3, y2: high[1] }, style },
            ],
          };
        },
        data: values.map((v, i) => [i, v]),
        z: 5,
      });
    }
    const [chart, holder] = chartFor(node);
    chart.setOption(option, true);
    const rows = buckets.map((b, i) => [
      { text: label.format(new Date(b)), value: b },
      ...names.map((name) => ({ text: fmt(series.get(name).metric, series.get(name).values[i]), value: series.get(name).values[i] ?? "" })),
    ]);
    const table = dataTable([answer.granularity, ...names], rows);
    table.dataset.series = JSON.stringify(names);
    const partial = answer.rows.some((r) => r.partial) ? el("p", { class: "muted", text: "The last bucket is still filling." }) : null;
    node.querySelector(".body").replaceChildren(holder, table, ...(partial ? [partial] : []));
    chart.resize();
  }

  // ---- number: the metric over the range against the previous period ------------------------------------
  function renderNumber(node, tile) {
    const n = tile.number;
    if (!n || n.value === null || n.value === undefined) return emptyState(node, "No data in this range.");
    const a = tile.provenance && tile.provenance.approximate && tile.provenance.approximate[n.metric];
    const error = a && a.relative_error;
    const value = el("span", { class: "value", "data-value": n.value, "data-metric": n.metric, text: (error ? "≈ " : "") + fmt(n.metric, n.value) });
    const parts = [el("div", {}, value, error ? el("span", { class: "err", text: `± ${pct1.format(error)}` }) : null)];
    if (error) {
      // The error bar: the interval value ± error on a scale of ± 3 × error around the value.
      const span = (2 * error) / (6 * error);
      parts.push(el("div", { class: "errbar", title: `${fmt(n.metric, n.value * (1 - error))} to ${fmt(n.metric, n.value * (1 + error))}` },
        el("span", { style: `left:${((1 - span) / 2) * 100}%;width:${span * 100}%` }), el("i", { style: "left:50%" })));
    }
    if (n.change !== null && n.change !== undefined) {
      const direction = n.change > 0 ? "up" : n.change < 0 ? "down" : "";
      parts.push(el("div", { class: `change ${direction}`, "data-value": n.change, "data-previous": n.previous },
        `${n.change > 0 ? "▲" : n.change < 0 ? "▼" : "■"} ${signedPct(n.change)} vs previous period (${fmt(n.metric, n.previous)})`));
    } else if (n.previous !== undefined) {
      parts.push(el("div", { class: "change muted", text: "No previous period to compare with." }));
    }
    disposeChart(node.dataset.tile);
    node.querySelector(".body").replaceChildren(el("div", { class: "number" }, parts));
  }

  // ---- breakdown: top N by a dimension and the rest ------------------------------------------------------
  function renderBreakdown(node, tile) {
    const answer = tile.answers[0];
    const metric = answer.metrics[0];
    const dimension = answer.group_by[0];
    if (nothing(answer)) return emptyState(node);
    const rows = answer.rows
      .map((r) => ({ name: r.rest ? "other" : String(r.dimensions[dimension]), value: r.values[metric], rest: r.rest }))
      .sort((a, b) => (a.rest - b.rest) || (b.value ?? 0) - (a.value ?? 0));
    const [chart, holder] = chartFor(node);
    const shown = [...rows].reverse();
    chart.setOption({
      animation: false,
      color: PALETTE,
      grid: { left: 8, right: 40, top: 4, bottom: 4, containLabel: true },
      tooltip: { trigger: "item", valueFormatter: (v) => fmt(metric, v) },
      xAxis: { type: "value", axisLabel: { formatter: (v) => axis(metric, v) } },
      yAxis: { type: "category", data: shown.map((r) => r.name) },
      series: [{
        type: "bar",
        data: shown.map((r) => ({ value: r.value, itemStyle: r.rest ? { color: "#bdc1c6" } : undefined })),
        label: { show: true, position: "right", formatter: (p) => fmt(metric, p.value) },
      }],
    }, true);
    chart.off("click");
    chart.on("click", (p) => {
      const name = shown[p.dataIndex].name;
      if (!shown[p.dataIndex].rest) addFilter(dimension, "eq", name);
    });
    const table = dataTable([dimension, metric], rows.map((r) => [r.name, { text: fmt(metric, r.value), value: r.value ?? "" }]));
    node.querySelector(".body").replaceChildren(holder, el("p", { class: "muted", text: "Click a bar to filter the dashboard by it." }), table);
    chart.resize();
  }

  // ---- funnel: users per step, conversion, pending -------------------------------------------------------
  function renderFunnel(node, tile) {
    const answer = tile.answers[0];
    const steps = answer.steps.map((s) => s.title || s.event_type);
    if (!answer.rows.length) return emptyState(node, "Nobody entered the funnel in this range.");
    const reached = steps.map(() => 0);
    const pending = steps.map(() => 0);
    for (const row of answer.rows) {
      row.reached.forEach((n, i) => (reached[i] += n));
      // pending_at[i]: users whose last step is i + 1 and whose window is still open: they may reach i + 2.
      row.pending_at.forEach((n, i) => (pending[i + 1] += n));
    }
    const [chart, holder] = chartFor(node);
    chart.setOption({
      animation: false,
      grid: { left: 8, right: 12, top: 30, bottom: 8, containLabel: true },
      legend: { top: 0, data: ["reached", "may still reach (pending)"] },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      xAxis: { type: "category", data: steps },
      yAxis: { type: "value" },
      series: [
        {
          name: "reached", type: "bar", stack: "users", color: "#3558d6", data: reached,
          label: {
            show: true, position: "insideTop", color: "#fff",
            formatter: (p) => (p.dataIndex ? pct1.format(reached[0] ? reached[p.dataIndex] / reached[0] : 0) : nf0.format(p.value)),
          },
        },
        { name: "may still reach (pending)", type: "bar", stack: "users", color: "#9fb2ee", data: pending.map((n, i) => (i ? n : 0)) },
      ],
    }, true);
    const rows = steps.map((step, i) => [
      step,
      { text: nf0.format(reached[i]), value: reached[i] },
      { text: i ? (reached[i - 1] ? pct1.format(reached[i] / reached[i - 1]) : "–") : "", value: i && reached[i - 1] ? reached[i] / reached[i - 1] : "" },
      { text: reached[0] ? pct1.format(reached[i] / reached[0]) : "–", value: reached[0] ? reached[i] / reached[0] : "" },
      { text: i ? nf0.format(pending[i]) : "", value: i ? pending[i] : "" },
    ]);
    const table = dataTable(["step", "users", "from previous", "from first", "pending"], rows);
    table.open = true;
    const note = answer.breakdown ? el("p", { class: "muted", text: `All ${answer.breakdown} values added up.` }) : null;
    node.querySelector(".body").replaceChildren(holder, ...(note ? [note] : []), table);
    chart.resize();
  }

  // ---- experiment: lift, interval and verdict per metric and variant ------------------------------------
  function renderExperiment(node, tile) {
    const result = tile.answers[0];
    const titles = Object.fromEntries(result.experiment.metrics.map((m) => [m.key, m]));
    disposeChart(node.dataset.tile);
    if (!result.rows.length) return emptyState(node, "No exposures yet.");
    const users = Object.entries(result.users).map(([v, n]) => `${v} ${nf0.format(n)}`).join(" · ");
    const parts = [el("p", { class: "muted", text: `Users: ${users}` })];
    if (result.srm_p_value !== null && result.srm_p_value < 0.001) {
      parts.push(el("p", { class: "warning", text: `Sample ratio mismatch (p = ${result.srm_p_value.toExponential(1)}): the split is not the one configured; check the assignment before trusting the results.` }));
    }
    const variants = new Set(result.rows.map((r) => r.variant)).size;
    const bound = Math.max(0.05, ...result.rows.flatMap((r) => [Math.abs(r.relative_ci_low ?? 0), Math.abs(r.relative_ci_high ?? 0)]));
    const rows = result.rows.map((r) => {
      const m = titles[r.metric] || { title: r.metric, kind: r.kind };
      const mean = (v) => (v === null || v === undefined ? "–" : m.kind === "conversion" ? pct2.format(v) : nf2.format(v));
      const ci = el("span", { class: "ci", title: `${signedPct(r.relative_ci_low)} to ${signedPct(r.relative_ci_high)}` });
      if (r.relative_ci_low !== null && r.relative_ci_high !== null) {
        const x = (v) => ((v + bound) / (2 * bound)) * 100;
        ci.append(el("span", { style: `left:${x(r.relative_ci_low)}%;width:${x(r.relative_ci_high) - x(r.relative_ci_low)}%` }), el("i", { style: "left:50%" }));
      }
      const verdict = r.verdict || (r.cannot_compute ? "none" : "inconclusive");
      const evidence = r.chance_to_win !== null && r.chance_to_win !== undefined
        ? `${pct1.format(r.chance_to_win)} to win`
        : r.relative_p_value !== null && r.relative_p_value !== undefined ? `p = ${r.relative_p_value.toPrecision(2)}` : "";
      const label = r.cannot_compute ? "cannot compute" : VERDICTS[verdict] || verdict.replaceAll("_", " ");
      return el("tr", { "data-metric": r.metric, "data-variant": r.variant },
        el("th", { scope: "row", title: m.title || r.metric }, r.metric, variants > 1 ? el("span", { class: "ci-text", text: r.variant }) : null),
        el("td", { "data-value": r.control_mean ?? "", text: mean(r.control_mean) }),
        el("td", { "data-value": r.variant_mean ?? "", text: mean(r.variant_mean) }),
        el("td", { "data-value": r.relative_lift ?? "" }, signedPct(r.relative_lift), el("span", { class: "ci-text", text: evidence })),
        el("td", { class: "interval" }, ci, el("span", { class: "ci-text", text: `${signedPct(r.relative_ci_low)} to ${signedPct(r.relative_ci_high)}` })),
        el("td", {}, el("span", { class: `verdict ${verdict}`, "data-value": r.verdict ?? "", title: r.cannot_compute || evidence, text: label })));
    });
    const variant = variants > 1 ? "variant" : result.rows[0].variant;
    const table = el("table", { class: "experiment" },
      el("thead", {}, el("tr", {}, ["metric", result.rows[0].control, variant, "lift", "interval", "verdict"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows));
    parts.push(el("div", { class: "table-wrap" }, table));
    node.querySelector(".body").replaceChildren(...parts);
  }

  // ---- live: the realtime layer's last minutes, followed over SSE ----------------------------------------
  function renderLive(node, tile) {
    const found = tile.answers[0];
    const metrics = Object.keys(found.totals);
    node.dataset.metrics = JSON.stringify(metrics);
    for (const [m, a] of Object.entries((tile.provenance && tile.provenance.approximate) || {})) state.liveApprox[m] = a.relative_error;
    const grid = el("div", { class: "live-grid" });
    for (const metric of metrics) {
      grid.append(el("div", { class: "metric", "data-metric": metric },
        el("div", { class: "label" }, el("span", { class: "pulse" }), metric),
        el("div", { class: "value", "data-value": found.totals[metric] ?? "" , text: fmt(metric, found.totals[metric]) }),
        el("div", { class: "err muted" })));
    }
    const [chart, holder] = chartFor(node, `${node.dataset.tile}:live`);
    holder.style.minWidth = "240px";
    grid.append(holder);
    node.querySelector(".body").replaceChildren(grid, el("div", { class: "muted live-note", text: "Waiting for the live stream…" }));
    updateLive(node, { totals: found.totals, users: {}, approximate: {}, minutes: found.minutes, at: found.at }, false);
    chart.resize();
  }

  function updateLive(node, frame, fromStream) {
    const metrics = JSON.parse(node.dataset.metrics || "[]");
    for (const metric of metrics) {
      const value = metric in (frame.users || {}) ? frame.users[metric] : frame.totals[metric];
      const box = node.querySelector(`.metric[data-metric="${CSS.escape(metric)}"]`);
      if (!box || value === undefined) continue;
      const v = box.querySelector(".value");
      v.dataset.value = value ?? "";
      v.textContent = fmt(metric, value);
      const how = (frame.approximate || {})[metric];
      const error = state.liveApprox[metric];
      box.querySelector(".err").textContent = how === "hyperloglog" && error ? `± ${pct1.format(error)} (estimate)` : "";
      if (fromStream) {
        const pulse = box.querySelector(".pulse");
        pulse.classList.add("on");
        setTimeout(() => pulse.classList.remove("on"), 600);
      }
    }
    const chart = state.charts.get(`${node.dataset.tile}:live`);
    if (chart && frame.minutes) {
      const tz = state.view.timezone;
      const label = timeFormat("minute", tz);
      chart.setOption({
        animation: false,
        grid: { left: 4, right: 4, top: 18, bottom: 4, containLabel: true },
        title: { text: "events per minute", textStyle: { fontSize: 11, fontWeight: "normal", color: "#667085" } },
        tooltip: { trigger: "axis" },
        xAxis: { type: "category", data: frame.minutes.map((m) => label.format(new Date(m.minute))), axisLabel: { show: false } },
        yAxis: { type: "value", splitNumber: 2 },
        series: [{ type: "bar", color: "#22a559", data: frame.minutes.map((m) => m.events ?? 0) }],
      });
    }
    if (fromStream) {
      node.dataset.frames = String(state.liveFrames);
      node.querySelector(".live-note").textContent = `Live: updated ${new Date(frame.at).toLocaleTimeString("en-GB", { hourCycle: "h23" })}`;
    }
  }

  function stopLive() {
    if (state.liveAbort) state.liveAbort.abort();
    state.liveAbort = null;
  }

  // EventSource cannot send the Authorization header, so the stream is read with fetch.
  async function startLive() {
    stopLive();
    const controller = new AbortController();
    state.liveAbort = controller;
    let retry = LIVE_RETRY_MS;
    while (!controller.signal.aborted) {
      try {
        const response = await fetch("api/v1/live", {
          headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" },
          signal: controller.signal,
        });
        if (response.status === 401) {
          showLogin("This read key is no longer accepted.");
          return;
        }
        if (!response.ok) {
          let body = null;
          try {
            body = await response.json();
          } catch (_) {
            body = null;
          }
          liveNote(`Live numbers paused: ${describeError(response.status, body)}; trying again shortly.`);
          retry = Math.max(retry, 10000);
        } else {
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value.replace(/\r\n/g, "\n");
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              handleFrame(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
            }
          }
        }
      } catch (err) {
        if (controller.signal.aborted) return;
        liveNote(`Live numbers paused (${err.message}); reconnecting.`);
      }
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
  }

  function liveNote(text) {
    for (const note of document.querySelectorAll(".live-note")) note.textContent = text;
  }

  function handleFrame(text) {
    let event = "message";
    const data = [];
    for (const line of text.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length || event === "error") return;
    let frame;
    try {
      frame = JSON.parse(data.join("\n"));
    } catch (_) {
      return;
    }
    if (!frame.totals) return;
    state.liveFrames += 1;
    for (const node of document.querySelectorAll('.tile[data-kind="live"]')) {
      if (node.dataset.state === "ready") updateLive(node, frame, true);
    }
  }

  // ---- start ------------------------------------------------------------------------------------------------
  function main() {
    if (typeof echarts === "undefined") {
      banner("The chart library did not load (web/vendor/echarts): reinstall the project.");
      return;
    }
    setupZones();
    bindControls();
    readHash();
    if (state.key) start();
    else showLogin("");
  }

  main();
})();
