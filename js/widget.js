// prompt_attr heat-map widget (anywidget ES module, no build step).
//
// State lives in traits so a saved notebook re-renders without a kernel:
//   spans      [{text, pre}]  the prompt as span texts with the gap before each
//   tail       text after the last span
//   scores     [number|null]  checkpoint of every span's score (null: pending)
//   resolved   [bool]         false: share of a group the pass did not refine
//   evals      [int|null]     evaluation id that scored each span
//   stderr     [number|null]  surrogate runs: bootstrap standard error per span
//   significant [bool|null]   above the noise floor (null: not assessed yet)
//   outputs    {id: text}     ablated answers by evaluation id (checkpoint)
//   delta      {seq, scores: [[i, s, resolved, evalId]], outputs: [[id, text]]}
//              what changed since the last checkpoint (live runs only)
//   progress   {done, planned, calls, cache_hits, spend_usd, elapsed_s, eta_s}
//   header     {run_id, model, method, status, reason, noise_floor, scorer, unit,
//               target, notes: [text]}  notes say how sure the run is
//   baseline   text
//   stop_requested  bool, set by the Stop button
// Prompt and answers are untrusted: they only ever reach the DOM as text.

const HEAT = [220, 38, 38];

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmtScore(s) {
  return s === null || s === undefined ? "pending" : Number(s).toFixed(3);
}

function fmtUsd(v) {
  if (v === null || v === undefined) return "unknown";
  return v === 0 || v >= 0.01 ? `$${v.toFixed(4)}` : `$${v.toFixed(6)}`;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// Word-level diff (LCS) of the ablated answer against the baseline.
export function wordDiff(baseline, other) {
  const a = (baseline || "").split(/(\s+)/).filter((w) => w.length);
  const b = (other || "").split(/(\s+)/).filter((w) => w.length);
  const n = a.length, m = b.length;
  if (n * m > 4_000_000) return [["same", other || ""]];
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  const push = (kind, w) => {
    if (out.length && out[out.length - 1][0] === kind) out[out.length - 1][1] += w;
    else out.push([kind, w]);
  };
  while (i < n && j < m) {
    if (a[i] === b[j]) { push("same", a[i]); i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) { push("del", a[i]); i++; }
    else { push("add", b[j]); j++; }
  }
  while (i < n) push("del", a[i++]);
  while (j < m) push("add", b[j++]);
  return out;
}

function render({ model, el: root }) {
  root.classList.add("prompt-attr");
  const state = { scores: [], resolved: [], evals: [], stderr: [], significant: [], outputs: {}, seq: -1, selected: null };

  const status = el("div", "pa-status");
  const bar = el("div", "pa-bar");
  const barFill = el("div", "pa-bar-fill");
  bar.appendChild(barFill);
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  const stats = el("div", "pa-stats");
  const stop = el("button", "pa-stop", "Stop");
  stop.type = "button";
  stop.addEventListener("click", () => {
    model.set("stop_requested", true);
    model.save_changes();
    stop.disabled = true;
    stop.textContent = "Stopping…";
  });
  const top = el("div", "pa-top");
  top.append(status, stop);
  const legend = el("div", "pa-legend");
  const notes = el("ul", "pa-notes");
  const prompt = el("div", "pa-prompt");
  prompt.setAttribute("aria-label", "prompt heat-map");
  const detail = el("div", "pa-detail");
  detail.setAttribute("aria-live", "polite");
  const baselineBox = el("div", "pa-baseline");
  const ranking = el("ol", "pa-ranking");
  const side = el("div", "pa-side");
  side.append(el("div", "pa-h", "Baseline output"), baselineBox, el("div", "pa-h", "Selected span"), detail,
    el("div", "pa-h", "Top spans"), ranking);
  const body = el("div", "pa-body");
  body.append(prompt, side);
  root.append(top, bar, stats, legend, notes, body);

  let spanNodes = [];

  function scaleMax() {
    let mx = 0.05;
    for (const s of state.scores) if (s !== null && s !== undefined && s > mx) mx = s;
    return mx;
  }

  function noiseFloor() {
    const h = model.get("header") || {};
    return typeof h.noise_floor === "number" ? h.noise_floor : null;
  }

  function buildPrompt() {
    prompt.replaceChildren();
    spanNodes = [];
    (model.get("spans") || []).forEach((span, i) => {
      if (span.pre) prompt.appendChild(document.createTextNode(span.pre));
      const node = el("span", "pa-span", span.text);
      node.dataset.index = String(i);
      node.tabIndex = 0;
      node.setAttribute("role", "button");
      node.addEventListener("click", () => select(i));
      node.addEventListener("mouseenter", () => { if (state.selected === null) showDetail(i); });
      node.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(i); }
      });
      prompt.appendChild(node);
      spanNodes.push(node);
    });
    const tail = model.get("tail");
    if (tail) prompt.appendChild(document.createTextNode(tail));
  }

  // Noise is never shown as signal: the run's verdict where it has one,
  // else (a live score before the next estimate) the score against the floor.
  function isNoise(i) {
    const s = state.scores[i];
    if (s === null || s === undefined) return false;
    if (state.significant[i] === false) return true;
    if (state.significant[i] === true) return false;
    const floor = noiseFloor();
    return state.resolved[i] !== false && floor !== null && s <= floor;
  }

  function fmtErr(i) {
    const e = state.stderr[i];
    return e === null || e === undefined ? "" : ` ± ${Number(e).toFixed(3)}`;
  }

  function paint() {
    const mx = scaleMax();
    const floor = noiseFloor();
    const h = model.get("header") || {};
    spanNodes.forEach((node, i) => {
      const s = state.scores[i];
      const pending = s === null || s === undefined;
      const muted = isNoise(i);
      const alpha = pending ? 0 : 0.08 + 0.62 * Math.min(1, Math.max(0, s / mx));
      node.style.backgroundColor = pending ? "" : `rgba(${HEAT.join(",")},${alpha.toFixed(3)})`;
      node.classList.toggle("pa-pending", pending);
      node.classList.toggle("pa-muted", muted);
      node.classList.toggle("pa-unresolved", !pending && state.resolved[i] === false);
      node.classList.toggle("pa-selected", state.selected === i);
      const label = `span ${i}: score ${fmtScore(s)}${pending ? "" : fmtErr(i)}${muted ? " (below noise floor)" : ""}` +
        (!pending && state.resolved[i] === false ? " (share of an unrefined group)" : "");
      node.title = label;
      node.setAttribute("aria-label", label);
    });
    legend.replaceChildren(
      el("span", "pa-legend-label", "score 0"),
      el("span", "pa-legend-scale"),
      el("span", "pa-legend-label", `${mx.toFixed(3)}${h.unit ? " " + h.unit : ""}`),
      el("span", "pa-legend-note", floor !== null ? ` · uncoloured: below noise floor ${floor.toFixed(3)}` : ""),
    );
    notes.replaceChildren(...(h.notes || []).map((n) => el("li", null, n)));
    paintRanking();
  }

  function paintRanking() {
    const spans = model.get("spans") || [];
    const ranked = state.scores
      .map((s, i) => [s, i])
      .filter(([s]) => s !== null && s !== undefined)
      .sort((x, y) => y[0] - x[0] || x[1] - y[1])
      .slice(0, 5);
    ranking.replaceChildren(...ranked.map(([s, i]) => {
      const li = el("li", "pa-rank");
      const text = (spans[i] ? spans[i].text : "").replace(/\s+/g, " ");
      li.append(el("span", "pa-rank-score", fmtScore(s) + fmtErr(i)),
        el("span", "pa-rank-text", text.length > 70 ? text.slice(0, 69) + "…" : text));
      if (isNoise(i)) li.append(el("span", "pa-rank-noise", " (noise)"));
      li.tabIndex = 0;
      li.addEventListener("click", () => select(i));
      li.addEventListener("keydown", (e) => { if (e.key === "Enter") select(i); });
      return li;
    }));
  }

  function showDetail(i) {
    const spans = model.get("spans") || [];
    if (i === null || !spans[i]) {
      detail.replaceChildren(el("div", "pa-hint", "Click or focus a span to see what the model said without it."));
      return;
    }
    const s = state.scores[i];
    const evalId = state.evals[i];
    const output = evalId !== null && evalId !== undefined ? state.outputs[evalId] : undefined;
    const head = el("div", "pa-detail-head", `span ${i} · score ${fmtScore(s)}${fmtErr(i)}` +
      (isNoise(i) ? " · below the noise floor" : "") +
      (state.resolved[i] === false ? " · share of an unrefined group" : ""));
    const quote = el("div", "pa-detail-span", spans[i].text);
    const diff = el("div", "pa-diff");
    const h = model.get("header") || {};
    if (h.scorer === "logprob" && (output === undefined || output === null)) {
      diff.textContent = "Not regenerated: this run scores how much less likely the baseline answer" +
        (h.target ? ` (its part ${JSON.stringify(h.target)})` : "") + " becomes without the span.";
    } else if (output === undefined || output === null) {
      diff.textContent = s === null || s === undefined ? "not evaluated yet" :
        (h.method === "surrogate" ? "(a surrogate weight: no single answer without this span)" : "(answer not available)");
    } else {
      for (const [kind, words] of wordDiff(model.get("baseline"), output)) {
        diff.appendChild(el(kind === "same" ? "span" : kind === "add" ? "ins" : "del", `pa-diff-${kind}`, words));
      }
    }
    const what = output === undefined || output === null ? "What deleting it measures" : "Answer without it (diff against the baseline)";
    detail.replaceChildren(head, quote, el("div", "pa-h2", what), diff);
  }

  function select(i) {
    state.selected = state.selected === i ? null : i;
    showDetail(state.selected === null ? i : state.selected);
    paint();
  }

  function loadCheckpoint() {
    state.scores = [...(model.get("scores") || [])];
    state.resolved = [...(model.get("resolved") || [])];
    state.evals = [...(model.get("evals") || [])];
    state.stderr = [...(model.get("stderr") || [])];
    state.significant = [...(model.get("significant") || [])];
    state.outputs = { ...(model.get("outputs") || {}) };
    applyDelta();
  }

  function applyDelta() {
    const d = model.get("delta") || {};
    if (!d.scores && !d.outputs) return;
    for (const [i, s, resolved, evalId] of d.scores || []) {
      state.scores[i] = s;
      state.resolved[i] = resolved;
      state.evals[i] = evalId;
      state.significant[i] = null; // judged against the floor until the next estimate
    }
    for (const [id, text] of d.outputs || []) state.outputs[id] = text;
  }

  function paintStatus() {
    const h = model.get("header") || {};
    const p = model.get("progress") || {};
    const st = h.status || "running";
    status.replaceChildren(
      el("span", `pa-badge pa-${st}`, st),
      el("span", "pa-title", ` ${h.model || ""} · ${h.method || ""} · ${h.run_id || ""}`),
    );
    if (h.reason) status.appendChild(el("div", "pa-reason", h.reason));
    const done = p.done || 0, planned = Math.max(p.planned || 0, done);
    const pct = planned ? (100 * done) / planned : st === "running" ? 0 : 100;
    barFill.style.width = `${pct.toFixed(1)}%`;
    bar.setAttribute("aria-valuemax", String(planned));
    bar.setAttribute("aria-valuenow", String(done));
    stats.textContent = `${done} / ${planned} evaluations · ${p.calls || 0} calls · ${p.cache_hits || 0} cache hits · ` +
      `spend ${fmtUsd(p.spend_usd)} · ${fmtSeconds(p.elapsed_s)} elapsed` +
      (st === "running" ? ` · ETA ${fmtSeconds(p.eta_s)}` : "");
    stop.hidden = st !== "running" || !h.can_stop;
  }

  buildPrompt();
  loadCheckpoint();
  baselineBox.textContent = model.get("baseline") || "…";
  paint();
  paintStatus();
  showDetail(null);

  const onSpans = () => { buildPrompt(); paint(); };
  const onCheckpoint = () => { loadCheckpoint(); paint(); if (state.selected !== null) showDetail(state.selected); };
  const onDelta = () => { applyDelta(); paint(); if (state.selected !== null) showDetail(state.selected); };
  const onBaseline = () => { baselineBox.textContent = model.get("baseline") || "…"; };
  const handlers = [
    ["change:spans", onSpans],
    ["change:scores", onCheckpoint],
    ["change:significant", onCheckpoint],
    ["change:outputs", onCheckpoint],
    ["change:delta", onDelta],
    ["change:baseline", onBaseline],
    ["change:progress", paintStatus],
    ["change:header", () => { paintStatus(); paint(); }],
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  return () => { for (const [name, fn] of handlers) model.off(name, fn); };
}

export default { render };
