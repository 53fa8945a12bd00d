// The ecgmae viewer: upload a record, draw it in the clinical 3 x 4 + rhythm-strip layout, show the
// classifier's label probabilities and, for pre-training runs, the MAE's reconstruction of masked spans.
// No build step and no third-party code: the page talks only to the server that sent it.
"use strict";

const LAYOUT = [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]];
const ROW_H = 150;
const state = { model: null, files: [], example: "", run: 0, drawn: null, predictions: null };
window.ecgmaeViewer = state; // what the page drew, for people and browser tests

const $ = (id) => document.getElementById(id);

function can(endpoint) {
  return Boolean(state.model && state.model.endpoints.includes(endpoint));
}

async function init() {
  try {
    const r = await fetch("/v1/model");
    state.model = await r.json();
  } catch (e) {
    showError(`cannot reach the server: ${e.message}`);
    return;
  }
  const m = state.model;
  const labels = m.labels.length ? `${m.labels.length} labels` : "no labels";
  $("model").textContent = `${m.kind} run (${m.checkpoint}) · ${m.fs} Hz · ${m.leads.length} leads · ` +
    `${m.window_seconds} s windows · ${labels}` + (m.reconstruct_checkpoint ? ` · reconstruction: ${m.reconstruct_checkpoint}` : "");
  $("ratio-box").hidden = !can("/v1/reconstruct");
  $("labels-note").textContent = can("/v1/predict") ? "—" : "This run has no classifier head: no labels to show.";
  if (m.examples > 0) {
    const ex = await (await fetch("/v1/examples")).json();
    for (const name of ex.examples) $("examples").add(new Option(name, name));
    $("examples-box").hidden = false;
  }
  $("files").addEventListener("change", () => {
    state.files = Array.from($("files").files);
    state.example = "";
    $("examples").value = "";
    $("npy-fields").hidden = !state.files.some((f) => f.name.toLowerCase().endsWith(".npy"));
    if (state.files.length) analyse("all");
  });
  $("examples").addEventListener("change", () => {
    state.example = $("examples").value;
    if (state.example) analyse("all");
  });
  for (const id of ["fs", "leads"]) $(id).addEventListener("change", () => state.files.length && analyse("all"));
  $("mask-ratio").addEventListener("input", () => {
    $("mask-ratio-value").textContent = `${Math.round(100 * Number($("mask-ratio").value))}%`;
  });
  $("mask-ratio").addEventListener("change", () => (state.files.length || state.example) && analyse("reconstruct"));
  window.addEventListener("resize", () => state.trace && draw(state.trace));
}

function form(extra) {
  const fd = new FormData();
  if (state.example) {
    fd.append("example", state.example);
  } else {
    for (const f of state.files) fd.append("files", f, f.name);
    if (state.files.some((f) => f.name.toLowerCase().endsWith(".npy"))) {
      fd.append("fs", $("fs").value);
      if ($("leads").value.trim()) fd.append("leads", $("leads").value.trim());
    }
  }
  for (const [k, v] of Object.entries(extra)) fd.append(k, v);
  return fd;
}

async function post(path, extra) {
  const r = await fetch(path, { method: "POST", body: form(extra) });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${path}: HTTP ${r.status}`);
  return body;
}

async function analyse(what) {
  const run = ++state.run;
  showError("");
  $("status").textContent = "Working…";
  const t0 = performance.now();
  const recon = can("/v1/reconstruct");
  const jobs = {};
  if (what === "all" && can("/v1/predict")) jobs.pred = post("/v1/predict", recon ? {} : { include_signal: "1" });
  if (recon) jobs.rec = post("/v1/reconstruct", { mask_ratio: $("mask-ratio").value, seed: "0" });
  else if (!can("/v1/predict")) jobs.emb = post("/v1/embed", { include_signal: "1" });
  try {
    const got = {};
    for (const [k, p] of Object.entries(jobs)) got[k] = await p;
    if (run !== state.run) return; // a newer request has started
    if (got.pred) showLabels(got.pred.probabilities);
    state.trace = got.rec ? fromReconstruction(got.rec) : fromSignal((got.pred || got.emb).signal, got.pred || got.emb);
    draw(state.trace);
    $("status").textContent = `Done in ${Math.round(performance.now() - t0)} ms.`;
  } catch (e) {
    if (run !== state.run) return;
    showError(e.message);
    $("status").textContent = "";
  }
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function showLabels(probs) {
  state.predictions = probs;
  const list = $("labels");
  list.replaceChildren();
  const items = Object.entries(probs).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of items) {
    const li = document.createElement("li");
    li.dataset.label = label;
    li.dataset.prob = String(p);
    if (p >= 0.5) li.className = "high";
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("i");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    bar.append(fill);
    const val = document.createElement("span");
    val.className = "p";
    val.textContent = p.toFixed(3);
    li.append(name, bar, val);
    list.append(li);
  }
  $("labels-note").textContent = "Probability per label (≥ 0.5 in red).";
}

function fromSignal(sig, res) {
  return { name: res.record, fs: sig.fs, leads: sig.leads, x: sig.data, present: sig.leads.map(() => true),
           rec: null, mask: null, caption: `${res.record} · ${sig.fs} Hz · ${sig.leads.length} leads (as uploaded)` };
}

function fromReconstruction(r) {
  const rmse = r.masked_rmse === null ? "–" : `${r.masked_rmse.toFixed(3)} mV`;
  return { name: r.record, fs: r.fs, leads: r.leads, x: r.original, present: r.present, rec: r.reconstruction,
           mask: r.mask, caption: `${r.record} · model input at ${r.fs} Hz · ${Math.round(100 * r.mask_ratio)}% of ` +
           `patches masked · masked RMSE ${rmse}` };
}

function percentile(sorted, q) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : 0;
}

function draw(tr) {
  const cv = $("ecg");
  const dpr = window.devicePixelRatio || 1;
  const W = cv.clientWidth || 1100;
  const row = Object.fromEntries(tr.leads.map((n, i) => [n, i]));
  const has = (n) => n in row && tr.present[row[n]];
  const n = tr.x.length ? tr.x[0].length : 0;
  const dur = Math.min(10, n / tr.fs);
  const rhythm = has("II") ? "II" : tr.leads.find(has);
  const rows = LAYOUT.map((names) => names.map((lead, c) => [lead, (c * dur) / 4, ((c + 1) * dur) / 4]));
  if (rhythm) rows.push([[rhythm, 0, dur]]);
  const H = rows.length * ROW_H;
  cv.width = Math.round(W * dpr);
  cv.height = Math.round(H * dpr);
  cv.style.height = `${H}px`;
  const ctx = cv.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  // display only: each lead centred on its median, one amplitude scale for all (as plot_reconstruction)
  const end = Math.round(dur * tr.fs);
  const centre = tr.x.map((x) => percentile(Array.from(x.slice(0, end)).sort((a, b) => a - b), 0.5));
  const all = [];
  tr.x.forEach((x, i) => { if (tr.present[i]) for (let k = 0; k < end; k += 2) all.push(x[k] - centre[i]); });
  all.sort((a, b) => a - b);
  let lo = percentile(all, 0.001), hi = percentile(all, 0.999);
  const pad = 0.15 * Math.max(hi - lo, 0.5);
  lo -= pad; hi += pad;
  const px = W / dur, py = ROW_H / (hi - lo);
  const panels = [];
  let redPoints = 0;
  rows.forEach((parts, r) => {
    const y0 = r * ROW_H;
    const Y = (v) => y0 + (hi - v) * py;
    paper(ctx, W, y0, px, py, lo, hi, dur);
    for (const [lead, t0, t1] of parts) {
      const x0 = t0 * px;
      if (t0 > 0) { ctx.strokeStyle = "#4d4d4d"; ctx.lineWidth = 0.8; line(ctx, x0, y0 + 8, x0, y0 + ROW_H - 8); }
      label(ctx, lead, x0, y0);
      const i0 = Math.round(t0 * tr.fs), i1 = Math.min(Math.round(t1 * tr.fs), n);
      if (!has(lead) || i1 <= i0) {
        ctx.fillStyle = "#777"; ctx.font = "12px system-ui, sans-serif";
        ctx.fillText("absent", (t0 + t1) / 2 * px - 18, y0 + ROW_H / 2);
        continue;
      }
      const i = row[lead], X = (k) => x0 + ((k - i0) / tr.fs) * px;
      if (tr.mask) {
        ctx.fillStyle = "rgba(158, 202, 225, 0.45)";
        for (const [a, b] of tr.mask[i]) {
          const s = Math.max(a, i0), e = Math.min(b, i1);
          if (e > s) ctx.fillRect(X(s), y0 + 1, X(e) - X(s), ROW_H - 2);
        }
      }
      trace(ctx, tr.x[i], i0, i1, X, (v) => Y(v - centre[i]), "#000", null);
      if (tr.rec) redPoints += trace(ctx, tr.rec[i], i0, i1, X, (v) => Y(v - centre[i]), "#d62728", tr.mask[i]);
      label(ctx, lead, x0, y0); // again, over the traces
      panels.push({ lead, row: r, t0, t1 });
    }
  });
  state.drawn = { record: tr.name, panels, rhythm: rhythm || null, reconstruction: Boolean(tr.rec), redPoints,
                  seconds: dur };
  cv.dataset.panels = String(panels.filter((p) => p.row < 3).length);
  cv.dataset.rhythm = rhythm || "";
  cv.dataset.reconstruction = String(Boolean(tr.rec) && redPoints > 0);
  $("caption").textContent = tr.caption;
  $("legend").hidden = false;
}

function paper(ctx, W, y0, px, py, lo, hi, dur) {
  const grid = (dt, dv, colour) => {
    ctx.strokeStyle = colour; ctx.lineWidth = 0.6;
    if (dt * px >= 3) for (let t = 0; t <= dur + 1e-9; t += dt) line(ctx, t * px, y0, t * px, y0 + ROW_H);
    if (dv * py >= 3) for (let v = Math.ceil(lo / dv) * dv; v <= hi; v += dv) {
      const y = y0 + (hi - v) * py;
      line(ctx, 0, y, W, y);
    }
  };
  grid(0.04, 0.1, "#fbe0e0");
  grid(0.2, 0.5, "#f4a6a6");
  ctx.strokeStyle = "#c9ced3"; ctx.lineWidth = 1;
  ctx.strokeRect(0.5, y0 + 0.5, W - 1, ROW_H - 1);
}

function label(ctx, text, x0, y0) {
  ctx.font = "bold 12px system-ui, sans-serif";
  ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
  ctx.fillRect(x0 + 3, y0 + 3, ctx.measureText(text).width + 6, 16);
  ctx.fillStyle = "#000";
  ctx.fillText(text, x0 + 6, y0 + 15);
}

function line(ctx, x0, y0, x1, y1) {
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
}

// Draw samples i0..i1 of one lead; with spans, only inside them (the reconstruction of masked samples).
function trace(ctx, x, i0, i1, X, Y, colour, spans) {
  ctx.strokeStyle = colour; ctx.lineWidth = spans ? 1.4 : 1.1; ctx.lineJoin = "round";
  ctx.beginPath();
  let points = 0;
  const ranges = spans ? spans.map(([a, b]) => [Math.max(a, i0), Math.min(b, i1)]).filter(([a, b]) => b > a)
                       : [[i0, i1]];
  for (const [a, b] of ranges) {
    ctx.moveTo(X(a), Y(x[a]));
    for (let k = a + 1; k < b; k++) ctx.lineTo(X(k), Y(x[k]));
    points += b - a;
  }
  ctx.stroke();
  return points;
}

init();
