// WeatherVane dashboard: fetches the API's JSON endpoints and draws SVG. No library, no
// network beyond this API. Every drawn value carries it in a data- attribute (the
// Chromium test reads them back). The chosen date, hour and state live in the URL.
"use strict";

const METRICS = [
  { name: "temp_c", field: "avg_temp_c", title: "Temperature", unit: "°C" },
  { name: "pressure_mb", field: "avg_pressure_mb", title: "Pressure", unit: "mb" },
  { name: "humidity", field: "avg_humidity", title: "Humidity", unit: "%" },
  { name: "precip_mm", field: "avg_precip_mm", title: "Precipitation", unit: "mm" },
];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(name, attrs, text) {
  const node = name.startsWith("svg:")
    ? document.createElementNS(SVG, name.slice(4))
    : document.createElement(name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || `${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

/// Runs `task` over `items`, `limit` at a time (a browser opens 6 connections anyway).
async function pool(items, limit, task) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]).catch((error) => ({ error }));
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

const round = (value, digits) => Number(value).toFixed(digits);
const digitsFor = (metric) => (metric === "pressure_mb" ? 1 : metric === "precip_mm" ? 2 : 1);

function fillSelect(select, values, chosen, label) {
  select.replaceChildren(...values.map((v) => el("option", { value: v }, label ? label(v) : v)));
  if (values.includes(chosen)) select.value = chosen;
  return select.value;
}

function setMessage(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

const view = { date: null, hour: null, state: null, series: {}, reported: null };
/// How often the page asks whether new hours were reported (it redraws when they were).
const REFRESH_MS = 15000;

function readUrl() {
  const query = new URLSearchParams(location.search);
  return { date: query.get("date"), hour: query.get("hour"), state: query.get("state") };
}

function writeUrl() {
  const query = new URLSearchParams({ date: view.date, hour: view.hour, state: view.state });
  history.replaceState(null, "", `${location.pathname}?${query}`);
}

// ---- pipeline --------------------------------------------------------------------

function drawStatus(status) {
  const reported = new Set(status.hours_reported);
  const pending = new Set(status.pending);
  const rows = Object.fromEntries(status.hours_stored.map((h) => [h.hour, h.rows]));
  view.reported = status.hours_reported.join(",");
  $("reported-count").textContent = `${reported.size} of 24`;
  $("reported-count").dataset.value = reported.size;
  const last = status.last_report;
  $("last-report").textContent = last ? `${last.date} ${last.hour}:00 UTC` : "none yet";
  $("last-report").dataset.value = last ? `${last.date}T${last.hour}` : "";
  $("pending").textContent = pending.size ? [...pending].map((h) => `${h}:00`).join(", ") : "none";
  $("pending").dataset.value = [...pending].join(",");
  const strip = $("hour-strip");
  strip.replaceChildren();
  for (let h = 0; h < 24; h++) {
    const hour = String(h).padStart(2, "0");
    const state = reported.has(hour) ? "reported" : pending.has(hour) ? "pending" : "none";
    const title = `${hour}:00 — ${state}${rows[hour] ? `, ${rows[hour]} rows stored` : ""}`;
    strip.append(
      el("span", { class: `cell ${state}`, "data-hour": hour, "data-state": state, "data-rows": rows[hour] || 0, title },
        h % 3 === 0 ? hour : ""),
    );
  }
}

// ---- charts ------------------------------------------------------------------------

// A narrower drawing on a phone, so its text stays readable once scaled to the screen.
const NARROW = window.matchMedia("(max-width: 600px)").matches;
const W = NARROW ? 380 : 560, H = NARROW ? 230 : 260;
const M = { left: NARROW ? 44 : 58, right: 14, top: 14, bottom: 30 };

function niceTicks(lo, hi, count) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const step0 = (hi - lo) / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= step0);
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  if (ticks[ticks.length - 1] < hi) ticks.push(+(ticks[ticks.length - 1] + step).toPrecision(12));
  return ticks;
}

function drawChart(metric) {
  const states = Object.keys(view.series).sort();
  const values = states.flatMap((s) => view.series[s].map((p) => p[metric.field]));
  const card = el("figure", { class: "card chart", "data-metric": metric.name });
  const caption = el("figcaption");
  caption.append(el("strong", {}, metric.title), el("span", { class: "unit" }, ` ${metric.unit}, mean over each state's stations`));
  card.append(caption);
  if (!values.length) {
    card.append(el("p", { class: "empty" }, "No averages for this date."));
    return card;
  }
  const ticks = niceTicks(Math.min(...values), Math.max(...values), 4);
  const [lo, hi] = [ticks[0], ticks[ticks.length - 1]];
  const x = (hour) => M.left + (hour / 23) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - ((v - lo) / (hi - lo)) * (H - M.top - M.bottom);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${metric.title} by hour, every state` });
  for (const t of ticks) {
    svg.append(el("svg:line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }));
    svg.append(el("svg:text", { class: "tick", x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, String(t)));
  }
  for (let h = 0; h < 24; h += 3) {
    svg.append(el("svg:text", { class: "tick", x: x(h), y: H - M.bottom + 18, "text-anchor": "middle" }, String(h).padStart(2, "0")));
  }
  const line = (points) => points.map((p, i) => `${i ? "L" : "M"}${x(+p.hour).toFixed(1)},${y(p[metric.field]).toFixed(1)}`).join("");
  const others = el("svg:g", { class: "others" });
  for (const state of states.filter((s) => s !== view.state)) {
    const points = view.series[state];
    others.append(el("svg:path", {
      class: "series", d: line(points), "data-state": state,
      "data-hours": points.map((p) => p.hour).join(","),
      "data-values": points.map((p) => p[metric.field]).join(","),
    }, undefined));
    others.lastChild.append(el("svg:title", {}, state));
  }
  svg.append(others);
  const chosen = view.series[view.state];
  if (chosen) {
    svg.append(el("svg:path", {
      class: "series chosen", d: line(chosen), "data-state": view.state,
      "data-hours": chosen.map((p) => p.hour).join(","),
      "data-values": chosen.map((p) => p[metric.field]).join(","),
    }));
    for (const p of chosen) {
      const value = p[metric.field];
      const dot = el("svg:circle", {
        class: `point${p.hour === view.hour ? " current" : ""}`, cx: x(+p.hour), cy: y(value), r: p.hour === view.hour ? 5 : 3,
        "data-state": view.state, "data-hour": p.hour, "data-value": value,
      });
      dot.append(el("svg:title", {}, `${view.state} ${p.hour}:00 — ${round(value, digitsFor(metric.name))} ${metric.unit}`));
      svg.append(dot);
    }
  }
  svg.addEventListener("click", (event) => {
    const state = event.target.dataset && event.target.dataset.state;
    if (state && state !== view.state) chooseState(state);
  });
  card.append(svg);
  const current = chosen && chosen.find((p) => p.hour === view.hour);
  card.append(el("p", { class: "readout" }, current
    ? `${view.state} at ${view.hour}:00: ${round(current[metric.field], digitsFor(metric.name))} ${metric.unit}`
    : `${view.state}: no report at ${view.hour}:00`));
  return card;
}

function drawCharts() {
  $("charts").replaceChildren(...METRICS.map(drawChart));
  $("averages-note").textContent = `${view.state} highlighted against ${Object.keys(view.series).length - 1} other states; click a line to pick it`;
}

// ---- extremes ----------------------------------------------------------------------

function extremesRows(table, answer, holderKey) {
  const body = table.tBodies[0];
  body.replaceChildren();
  if (!answer) {
    body.append(el("tr", {}, undefined));
    body.lastChild.append(el("td", { colspan: 3, class: "empty" }, "No report for this hour."));
    return;
  }
  for (const metric of METRICS) {
    const row = el("tr", { "data-metric": metric.name });
    row.append(el("th", { scope: "row" }, `${metric.title} (${metric.unit})`));
    for (const side of ["max", "min"]) {
      const holder = answer[side][metric.name];
      const cell = el("td", { "data-side": side, "data-holder": holder[holderKey], "data-value": holder.value });
      cell.append(el("span", { class: "holder" }, holder[holderKey]), " ", el("span", { class: "value" }, round(holder.value, digitsFor(metric.name))));
      row.append(cell);
    }
    body.append(row);
  }
}

async function drawExtremes() {
  $("extremes-hour").textContent = `${view.date} ${view.hour}:00 UTC`;
  $("zip-state").textContent = view.state;
  const [states, zips] = await Promise.all([
    getJson(`/state_extremes?date=${view.date}&hour=${view.hour}`).catch(() => null),
    getJson(`/extremes?state=${view.state}&date=${view.date}&hour=${view.hour}`).catch(() => null),
  ]);
  extremesRows($("state-extremes"), states, "state");
  extremesRows($("zip-extremes"), zips, "zip_code");
}

// ---- flow --------------------------------------------------------------------------

async function chooseState(state) {
  view.state = state;
  $("state").value = state;
  writeUrl();
  drawCharts();
  await drawExtremes();
}

async function loadDate(wanted) {
  document.body.dataset.ready = "false";
  view.date = wanted.date;
  const [status, hours, states] = await Promise.all([
    getJson(`/status?date=${view.date}`),
    getJson(`/hours?date=${view.date}`).catch(() => ({ hours: [] })),
    getJson(`/states?date=${view.date}`).catch(() => ({ states: [] })),
  ]);
  drawStatus(status);
  const hour = wanted.hour && String(wanted.hour).padStart(2, "0");
  view.hour = fillSelect($("hour"), hours.hours, hours.hours.includes(hour) ? hour : hours.hours[hours.hours.length - 1], (h) => `${h}:00`);
  const upper = wanted.state && wanted.state.toUpperCase();
  view.state = fillSelect($("state"), states.states, states.states.includes(upper) ? upper : states.states.includes("CA") ? "CA" : states.states[0]);
  const series = await pool(states.states, 6, (state) => getJson(`/avg?state=${state}&date=${view.date}`));
  view.series = {};
  states.states.forEach((state, i) => { if (Array.isArray(series[i])) view.series[state] = series[i]; });
  writeUrl();
  drawCharts();
  await drawExtremes();
  setMessage(states.states.length ? "" : `No reports on ${view.date} yet.`);
  document.body.dataset.ready = "true";
}

/// Loads the dates; draws the wanted one (or the latest), or says there is nothing yet.
async function start(wanted) {
  const { dates } = await getJson("/dates");
  if (!dates.length) {
    setMessage("No reports yet: stream some data and this page fills in.");
    drawStatus(await getJson("/status"));
    document.body.dataset.ready = "true";
    return;
  }
  const date = fillSelect($("date"), dates.slice().reverse(), dates.includes(wanted.date) ? wanted.date : dates[dates.length - 1]);
  await loadDate({ date, hour: wanted.hour, state: wanted.state });
}

/// While the pipeline works: new dates appear in the menu, and the page redraws when
/// the shown date has new reported hours.
async function refresh() {
  if (!view.date) return start(readUrl());
  const { dates } = await getJson("/dates");
  fillSelect($("date"), dates.slice().reverse(), view.date);
  const status = await getJson(`/status?date=${view.date}`);
  const before = view.reported;
  drawStatus(status);
  if (document.body.dataset.ready === "error") {
    setMessage("");
    document.body.dataset.ready = "true";
  }
  if (status.hours_reported.join(",") !== before) await loadDate({ date: view.date, hour: view.hour, state: view.state });
}

async function main() {
  $("date").addEventListener("change", () => loadDate({ date: $("date").value, hour: view.hour, state: view.state }).catch(fail));
  $("hour").addEventListener("change", () => { view.hour = $("hour").value; writeUrl(); drawCharts(); drawExtremes().catch(fail); });
  $("state").addEventListener("change", () => chooseState($("state").value).catch(fail));
  await start(readUrl()).catch(fail);
  setInterval(() => refresh().catch(fail), REFRESH_MS);
}

function fail(error) {
  setMessage(`Could not load the reports: ${error.message}`);
  document.body.dataset.ready = "error";
}

main();
