// The report page: reads the inline JSON and renders overview tables, SVG plots and a paged,
// filterable record browser. No network, no libraries: everything the page needs is in this file.
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const PAGE_SIZE = 25;
const state = { page: 0, kind: "", status: "", category: "", gate: "", transition: "", text: "" };

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(digits);
  return String(value);
}
function table(headers, rows, numeric = []) {
  const head = "<tr>" + headers.map(h => `<th>${esc(h)}</th>`).join("") + "</tr>";
  const body = rows.map(r => "<tr>" + r.map((c, i) => `<td class="${numeric.includes(i) ? "num" : ""}">${esc(fmt(c))}</td>`).join("") + "</tr>").join("");
  return `<table>${head}${body}</table>`;
}
function seconds(a, b) {
  const t = (Date.parse(b) - Date.parse(a)) / 1000;
  return Number.isFinite(t) ? t : null;
}

// ------------------------------------------------------------ overview
function renderOverview() {
  const meta = DATA.meta || {}, status = DATA.status || {};
  document.getElementById("subtitle").textContent = `${DATA.run} · source ${meta.source ?? "?"} · created ${meta.created ?? "?"}`;
  let out = "<h2>Run</h2><div class='grid'>";
  const stages = (meta.stages || []).map(s => [s.stage, String(s.started || "").replace("T", " ").slice(0, 19), seconds(s.started, s.finished),
    Object.entries(s.counts || {}).map(([k, v]) => `${k}=${v}`).join(", ")]);
  out += `<div class="card wide"><h3>Stages</h3>${table(["stage", "started", "time s", "counts"], stages, [2])}</div>`;
  const usage = (status.usage || []).map(u => [u.stage, `${u.provider}:${String(u.model).split("/").pop()}`, u.requests, u.cache_hits, u.failed, u.input_tokens, u.output_tokens, u.cost]);
  out += `<div class="card wide"><h3>Model calls, tokens, cost</h3>${usage.length ? table(["stage", "model", "calls", "cached", "failed", "tokens in", "tokens out", "cost $"], usage, [2, 3, 4, 5, 6, 7]) : "<p class='muted'>no model calls recorded</p>"}</div>`;
  const gates = DATA.gates || { accepted: {}, by_gate: {} };
  const gateRows = [];
  for (const [stage, byGate] of Object.entries(gates.by_gate || {}))
    for (const [gate, c] of Object.entries(byGate)) gateRows.push([stage, gate, c.repaired || 0, c.rejected || 0]);
  const accepted = Object.entries(gates.accepted || {}).map(([k, v]) => `${k}: ${v} accepted`).join(" · ");
  out += `<div class="card"><h3>Quality gates</h3><p>${esc(accepted)}</p>${gateRows.length ? table(["stage", "gate", "repaired", "rejected"], gateRows, [2, 3]) : "<p class='muted'>no gate failed</p>"}</div>`;
  const rejects = [];
  for (const [stage, reasons] of Object.entries(status.rejects || {}))
    for (const [reason, n] of Object.entries(reasons)) rejects.push([stage, reason, n]);
  out += `<div class="card"><h3>Rejects by reason</h3>${rejects.length ? table(["stage", "reason", "items"], rejects, [2]) : "<p class='muted'>none</p>"}</div>`;
  out += "</div>";
  document.getElementById("overview").innerHTML = out;
}

// ------------------------------------------------------------ plots (inline SVG)
function barChart(title, entries, opts = {}) {
  const w = 360, h = 180, pad = 28, n = Math.max(entries.length, 1);
  const max = Math.max(1, ...entries.map(e => e[1]));
  const bw = (w - pad - 6) / n;
  let bars = "";
  entries.forEach(([label, value, cls], i) => {
    const bh = (h - pad - 10) * value / max, x = pad + i * bw, y = h - pad - bh;
    bars += `<rect class="bar ${cls || ""}" x="${x + 1}" y="${y}" width="${Math.max(bw - 2, 1)}" height="${bh}"><title>${esc(label)}: ${value}</title></rect>`;
    const every = Math.ceil(n / 10);
    if (i % every === 0) bars += `<text x="${x + bw / 2}" y="${h - pad + 11}" text-anchor="middle">${esc(String(label).slice(0, 10))}</text>`;
  });
  const band = opts.band ? `<rect class="band" x="${pad + opts.band[0] * (w - pad - 6)}" y="0" width="${(opts.band[1] - opts.band[0]) * (w - pad - 6)}" height="${h - pad}"/>` : "";
  const svg = `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">${band}<line class="axis" x1="${pad}" y1="${h - pad}" x2="${w}" y2="${h - pad}"/><line class="axis" x1="${pad}" y1="0" x2="${pad}" y2="${h - pad}"/><text x="2" y="10">${max}</text>${bars}</svg>`;
  return `<div class="card plot"><h3>${esc(title)}</h3>${svg}${opts.note ? `<p class="muted">${esc(opts.note)}</p>` : ""}</div>`;
}
function histogram(values, lo, hi, bins) {
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / (hi - lo) * bins)))] += 1;
  const digits = hi - lo <= 2 ? 1 : 0;
  return counts.map((c, i) => [(lo + i * (hi - lo) / bins).toFixed(digits), c]);
}
function lineChart(title, points) {
  const w = 360, h = 180, pad = 34;
  const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = x => pad + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (w - pad - 6);
  const sy = y => (h - pad) - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (h - pad - 10);
  const path = points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
  const svg = `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}"><line class="axis" x1="${pad}" y1="${h - pad}" x2="${w}" y2="${h - pad}"/><line class="axis" x1="${pad}" y1="0" x2="${pad}" y2="${h - pad}"/><text x="2" y="10">${fmt(y1)}</text><text x="2" y="${h - pad}">${fmt(y0)}</text><text x="${pad}" y="${h - pad + 14}">step ${fmt(x0)}</text><text x="${w - 50}" y="${h - pad + 14}">${fmt(x1)}</text><path class="line" d="${path}"/></svg>`;
  return `<div class="card plot"><h3>${esc(title)}</h3>${svg}</div>`;
}
function renderPlots() {
  const p = DATA.plots || {};
  let out = "<h2>Distributions</h2><div class='grid'>";
  out += barChart("Videos per category", Object.entries(p.categories || {}));
  const d = p.durations || [];
  out += barChart("Video durations (s)", d.length ? histogram(d, 0, Math.max(...d) + 1e-9, 10) : []);
  const lengths = p.lengths || [], bands = p.length_bands || {};
  const maxWords = Math.max(500, ...lengths.map(l => l.words));
  for (const label of ["abnormal", "normal"]) {
    const words = lengths.filter(l => l.label === label).map(l => l.words);
    if (!words.length) continue;
    const band = bands[label] ? [bands[label][0] / maxWords, bands[label][1] / maxWords] : null;
    out += barChart(`Chain length, ${label} (words)`, histogram(words, 0, maxWords, 20), { band, note: band ? `green: target band ${bands[label][0]}–${bands[label][1]} words (Vad-R1)` : "" });
  }
  const ious = p.when_iou || [];
  if (ious.length) out += barChart("<when> IoU with the annotated span", histogram(ious, 0, 1.0000001, 10));
  const t = p.transitions || {};
  if (Object.values(t).some(v => v > 0)) {
    out += `<div class="card"><h3>Reflection transitions</h3><table id="transition-matrix"><tr><th>initial ↓ / revised →</th><th>correct</th><th>wrong</th></tr>
      <tr><th>correct</th><td class="num">C→C ${t["C→C"]}</td><td class="num">C→W ${t["C→W"]}</td></tr>
      <tr><th>wrong</th><td class="num">W→C ${t["W→C"]}</td><td class="num">W→W ${t["W→W"]}</td></tr></table></div>`;
  }
  document.getElementById("plots").innerHTML = out + "</div>";
}
function renderTraining() {
  const logs = DATA.train || [];
  if (!logs.length) return;
  let out = "<h2>Training</h2>";
  for (const log of logs) {
    out += `<p class="muted">${esc(log.path)}</p><div class="grid">`;
    for (const [key, points] of Object.entries(log.series)) if (points.length > 1) out += lineChart(key, points);
    out += "</div>";
  }
  document.getElementById("training").innerHTML = out;
}
function renderEval() {
  const evals = DATA.eval || [];
  if (!evals.length) return;
  let out = "<h2>Evaluation</h2>";
  for (const e of evals) {
    out += `<p class="muted">${esc(e.path)}</p>` + table(["metric", "value"], Object.entries(e.metrics), [1]);
    if (e.markdown) out += `<details><summary>metrics.md</summary><pre>${esc(e.markdown)}</pre></details>`;
  }
  document.getElementById("evaluation").innerHTML = out;
}
function renderDataset() {
  const ds = DATA.dataset;
  if (!ds) return;
  const splits = [...new Set(Object.values(ds.counts).flatMap(c => Object.keys(c)))].sort();
  const rows = Object.entries(ds.counts).map(([cfg, c]) => [cfg, ...splits.map(s => c[s] ?? 0)]);
  document.getElementById("dataset").innerHTML = `<h2>Dataset</h2><p class="muted">${esc(ds.path)}</p>` +
    table(["config", ...splits], rows, splits.map((_, i) => i + 1)) + (ds.card ? `<details><summary>dataset card</summary><pre>${esc(ds.card)}</pre></details>` : "");
}

// ------------------------------------------------------------ records
function highlightTags(text) {
  return esc(text).replace(/&lt;(\/?)([a-z0-9_]+)&gt;/g, (m, slash, name) =>
    `<span class="tag ${["answer", "which", "what", "when", "where", "why", "how"].includes(name) ? "answer" : ""}">&lt;${slash}${name}&gt;</span>`);
}
function wordDiff(a, b) {
  // Word-level LCS (bounded) so a reader sees what the revision changed.
  const x = a.split(/\s+/).filter(Boolean).slice(0, 400), y = b.split(/\s+/).filter(Boolean).slice(0, 400);
  const n = x.length, m = y.length, L = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push(highlightTags(x[i])); i++; j++; }
    else if (L[i + 1][j] >= L[i][j + 1]) out.push(`<del>${highlightTags(x[i++])}</del>`);
    else out.push(`<ins>${highlightTags(y[j++])}</ins>`);
  }
  while (i < n) out.push(`<del>${highlightTags(x[i++])}</del>`);
  while (j < m) out.push(`<ins>${highlightTags(y[j++])}</ins>`);
  return out.join(" ");
}
function frameStrip(r) {
  const frames = r.frames ? (DATA.thumbs[r.frames] || []) : [];
  const spans = (r.video && r.video.spans) || [];
  const duration = (r.video && r.video.duration) || r.duration;
  let out = "";
  if (frames.length) {
    out += `<div class="strip">` + frames.map(f => {
      const inSpan = spans.some(s => f.t >= s[0] && f.t <= s[1]);
      return `<figure class="${inSpan ? "inspan" : ""}"><img loading="lazy" src="${f.src}" alt="frame at ${f.t}s"><figcaption>${fmt(f.t, 1)} s</figcaption></figure>`;
    }).join("") + "</div>";
  }
  if (duration) {
    out += `<div class="timeline" title="annotated span (red)${r.when ? ", predicted <when> (blue)" : ""}">` +
      spans.map(s => `<div class="span" style="left:${100 * s[0] / duration}%;width:${100 * (s[1] - s[0]) / duration}%"></div>`).join("") +
      (r.when ? `<div class="pred" style="left:${100 * r.when[0]}%;width:${100 * (r.when[1] - r.when[0])}%"></div>` : "") + "</div>";
  }
  return out;
}
function recordHtml(r) {
  let body = "";
  const pills = [r.kind, r.label, r.category, r.task, r.transition].filter(Boolean).map(p => `<span class="pill">${esc(p)}</span>`).join("");
  body += `<div class="head"><b>${esc(r.id)}</b><span class="pill ${r.status}">${esc(r.status)}</span>${pills}${r.gates && r.gates.length ? `<span class="muted">gates: ${esc(r.gates.join(", "))}</span>` : ""}</div>`;
  body += frameStrip(r);
  if (r.status === "rejected") {
    body += `<p class="reason">${esc(r.reason)}</p><details><summary>detail</summary><pre>${esc(JSON.stringify(r.detail, null, 2))}</pre></details>`;
  } else if (r.kind === "cot") {
    body += `<p class="muted">${r.words} words · sentences per step ${esc((r.sentences || []).join("/"))}${r.when_iou !== null && r.when_iou !== undefined ? ` · &lt;when&gt; IoU ${fmt(r.when_iou)}` : ""}${r.when_source ? ` · when from ${esc(r.when_source)}` : ""}</p>`;
    body += `<details><summary>captions (${r.captions.length})</summary><div class="captions">${r.captions.map(c => `<div><b>${fmt(c.t, 1)} s</b> ${esc(c.text)}</div>`).join("")}</div></details>`;
    body += `<div class="steps"><ol>${r.steps.map(s => `<li>${esc(s)}</li>`).join("")}</ol></div><div class="tagged">${highlightTags(r.answer)}</div>`;
  } else if (r.kind === "reflect") {
    const options = (r.options || []).map((o, i) => `${"ABCD"[i]}. ${o}`).join(" · ");
    body += `<p><b>Q:</b> ${esc(r.question)}${options ? `<br><span class="muted">${esc(options)}</span>` : ""}<br><b>ground truth:</b> ${esc(r.ground_truth)}</p>`;
    body += `<div class="cols"><div><h3>initial (${esc(r.initial.prediction ?? "unparsed")}, ${r.initial.correct ? "correct" : "wrong"})</h3><div class="tagged">${highlightTags(r.initial.text)}</div></div>` +
      `<div><h3>reflection</h3><div class="tagged">${highlightTags(r.reflection)}</div></div>` +
      `<div><h3>revised (${esc(r.revised.prediction ?? "unparsed")}, ${r.revised.correct ? "correct" : "wrong"}) — changes marked</h3><div class="tagged">${wordDiff(r.initial.text, r.revised.text)}</div></div></div>`;
  }
  return `<article class="record ${r.status}" data-id="${esc(r.id)}">${body}</article>`;
}
function matches(r) {
  if (state.kind && r.kind !== state.kind) return false;
  if (state.status && r.status !== state.status) return false;
  if (state.category && r.category !== state.category) return false;
  if (state.gate && !(r.gates || []).includes(state.gate)) return false;
  if (state.transition && r.transition !== state.transition) return false;
  if (state.text && !JSON.stringify([r.id, r.category, r.reason, r.question]).toLowerCase().includes(state.text.toLowerCase())) return false;
  return true;
}
function options(values) {
  return `<option value="">all</option>` + [...new Set(values.filter(Boolean))].sort().map(v => `<option value="${esc(v)}">${esc(v)}</option>`).join("");
}
function renderFilters() {
  const rs = DATA.records;
  const filters = [["kind", rs.map(r => r.kind)], ["status", rs.map(r => r.status)], ["category", rs.map(r => r.category)],
    ["gate", rs.flatMap(r => r.gates || [])], ["transition", rs.map(r => r.transition)]];
  document.getElementById("filters").innerHTML = filters.map(([name, values]) =>
    `<label>${name} <select id="filter-${name}" data-key="${name}">${options(values)}</select></label>`).join("") +
    `<label>search <input id="filter-text" type="search" placeholder="id, category, reason…"></label>`;
  for (const el of document.querySelectorAll("#filters select")) el.addEventListener("change", e => { state[e.target.dataset.key] = e.target.value; state.page = 0; renderRecords(); });
  document.getElementById("filter-text").addEventListener("input", e => { state.text = e.target.value; state.page = 0; renderRecords(); });
}
function pager(total, pages) {
  return `<button class="prev-page" ${state.page === 0 ? "disabled" : ""}>‹ prev</button><span class="page-info">page ${pages ? state.page + 1 : 0} of ${pages} · ${total} records</span><button class="next-page" ${state.page + 1 >= pages ? "disabled" : ""}>next ›</button>`;
}
function renderRecords() {
  const shown = DATA.records.filter(matches);
  const pages = Math.ceil(shown.length / PAGE_SIZE);
  state.page = Math.min(state.page, Math.max(pages - 1, 0));
  const slice = shown.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  document.getElementById("record-list").innerHTML = slice.map(recordHtml).join("") || "<p class='muted'>no record matches</p>";
  for (const id of ["pager-top", "pager-bottom"]) {
    const el = document.getElementById(id);
    el.innerHTML = pager(shown.length, pages);
    el.querySelector(".prev-page").addEventListener("click", () => { state.page -= 1; renderRecords(); });
    el.querySelector(".next-page").addEventListener("click", () => { state.page += 1; renderRecords(); });
  }
}

renderOverview();
renderPlots();
renderTraining();
renderEval();
renderDataset();
renderFilters();
renderRecords();
