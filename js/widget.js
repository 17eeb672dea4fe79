// prompt_attr heat-map widget (anywidget ES module, no build step).
//
// State lives in traits so a saved notebook re-renders without a kernel:
//   spans      [{text, pre}]  the prompt as span texts with the gap before each
//   tail       text after the last span
//   scores     [number|null]  checkpoint of every span's score (null: pending)
//   resolved   [bool]         false: share of a group the pass did not refine
//   evals      [int|null]     evaluation id that scored each span
//   stderr     [number|null]  surrogate runs: bootstrap standard error per span
//   significant [bool|null]   the run's verdict: above the noise floor (null: not assessed)
//   heat       [css]          each span's background colour ("" for none)
//   muted      [bool]         below the noise floor: uncoloured, and labelled so
//   ranking    [int]          the top spans' indices, best first
//   scale      {top, low, high, note, colours: [css, css]}  the legend
//   outputs    {id: [[op, text]]|null}  ablated answers by evaluation id, as a word diff
//              against the baseline (op: equal | delete | insert; the equal and insert
//              pieces join to the answer; null: not regenerated)  (checkpoint)
//   delta      {seq, scores: [[i, s, resolved, evalId, css, muted]], outputs: [[id, diff]],
//               ranking?, heat?, muted?}  what changed since the last checkpoint (live runs;
//              heat and muted come whole when every colour changed)
//   progress   {done, planned, calls, cache_hits, spend, elapsed_s, eta_s}  spend: text
//   header     {run_id, model, method, status, reason, noise_floor, scorer, unit,
//               target, notes: [text]}  notes say how sure the run is
//   baseline   text
//   stop_requested  bool, set by the Stop button
// Python decides what is drawn (colours, noise, ranking, diffs, figures); this file
// applies it. Prompt and answers are untrusted: they only ever reach the DOM as text
// (appendText in common.js, which Python prepends to this file), and a colour only if
// it is an rgba() of numbers, as Python writes them.

function setText(node, text) {
  node.replaceChildren();
  appendText(node, text);
}

function fmtScore(s) {
  return s === null || s === undefined ? "pending" : Number(s).toFixed(3);
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function render({ model, el: root }) {
  root.classList.add("prompt-attr");
  const state = { scores: [], resolved: [], evals: [], stderr: [], heat: [], muted: [], ranking: [], outputs: {}, selected: null };

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
  const legendScale = el("span", "pa-legend-scale");
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

  function buildPrompt() {
    prompt.replaceChildren();
    spanNodes = [];
    (model.get("spans") || []).forEach((span, i) => {
      if (span.pre) appendText(prompt, span.pre);
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
    if (tail) appendText(prompt, tail);
  }

  // Noise is never shown as signal: Python flags it (views/scale.py) and sends no colour.
  function isNoise(i) {
    return state.muted[i] === true;
  }

  function fmtErr(i) {
    const e = state.stderr[i];
    return e === null || e === undefined ? "" : ` ± ${Number(e).toFixed(3)}`;
  }

  function paint() {
    const h = model.get("header") || {};
    const sc = model.get("scale") || {};
    spanNodes.forEach((node, i) => {
      const s = state.scores[i];
      const pending = s === null || s === undefined;
      const muted = isNoise(i);
      node.style.backgroundColor = pending ? "" : colour(state.heat[i]);
      node.classList.toggle("pa-pending", pending);
      node.classList.toggle("pa-muted", muted);
      node.classList.toggle("pa-unresolved", !pending && state.resolved[i] === false);
      node.classList.toggle("pa-selected", state.selected === i);
      const label = `span ${i}: score ${fmtScore(s)}${pending ? "" : fmtErr(i)}${muted ? " (below noise floor)" : ""}` +
        (!pending && state.resolved[i] === false ? " (share of an unrefined group)" : "");
      node.title = label;
      node.setAttribute("aria-label", label);
    });
    const [from, to] = (sc.colours || []).map(colour);
    legendScale.style.background = from && to ? `linear-gradient(to right, ${from}, ${to})` : "";
    legend.replaceChildren(
      el("span", "pa-legend-label", sc.low || "score 0"),
      legendScale,
      el("span", "pa-legend-label", sc.high || ""),
      el("span", "pa-legend-note", sc.note || ""),
    );
    notes.replaceChildren(...(h.notes || []).map((n) => el("li", null, n)));
    paintRanking();
  }

  function paintRanking() {
    const spans = model.get("spans") || [];
    ranking.replaceChildren(...state.ranking.filter((i) => spans[i]).map((i) => {
      const s = state.scores[i];
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
      setText(diff, "Not regenerated: this run scores how much less likely the baseline answer" +
        (h.target ? ` (its part ${JSON.stringify(h.target)})` : "") + " becomes without the span.");
    } else if (output === undefined || output === null) {
      setText(diff, s === null || s === undefined ? "not evaluated yet" :
        (h.method === "surrogate" ? "(a surrogate weight: no single answer without this span)" : "(answer not available)"));
    } else {
      for (const [op, words] of output) {
        const [tag, cls] = op === "insert" ? ["ins", "add"] : op === "delete" ? ["del", "del"] : ["span", "same"];
        diff.appendChild(el(tag, `pa-diff-${cls}`, words));
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
    state.heat = [...(model.get("heat") || [])];
    state.muted = [...(model.get("muted") || [])];
    state.ranking = [...(model.get("ranking") || [])];
    state.outputs = { ...(model.get("outputs") || {}) };
    applyDelta();
  }

  function applyDelta() {
    const d = model.get("delta") || {};
    if (d.heat) state.heat = [...d.heat];
    if (d.muted) state.muted = [...d.muted];
    if (d.ranking) state.ranking = [...d.ranking];
    for (const [i, s, resolved, evalId, heat, muted] of d.scores || []) {
      state.scores[i] = s;
      state.resolved[i] = resolved;
      state.evals[i] = evalId;
      state.heat[i] = heat;
      state.muted[i] = muted;
    }
    for (const [id, diff] of d.outputs || []) state.outputs[id] = diff;
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
    // A run that ended having planned nothing (a --target not in the answer) shows an empty bar
    // and says so, never a full bar at "0 / 0 evaluations".
    const pct = planned ? (100 * done) / planned : st === "finished" ? 100 : 0;
    barFill.style.width = `${pct.toFixed(1)}%`;
    bar.setAttribute("aria-valuemax", String(planned));
    bar.setAttribute("aria-valuenow", String(done));
    const measured = planned || st === "running" ? `${done} / ${planned} evaluations` : "no evaluations";
    stats.textContent = `${p.phase && st === "running" ? `${p.phase} · ` : ""}${measured} · ` +
      `${p.calls || 0} calls · ${p.cache_hits || 0} cache hits · ` +
      `spend ${p.spend || "–"} · ${fmtSeconds(elapsed(p, st))} elapsed` +
      (st === "running" ? ` · ETA ${fmtSeconds(p.eta_s)}` : "");
    stop.hidden = st !== "running" || !h.can_stop;
  }

  // Elapsed counts on between the kernel's updates while the run is live, from the last
  // figure the kernel sent, or from when this view appeared (the cell started: the model
  // loading and the baseline send none).
  let progressAt = performance.now(), shownElapsed = 0;
  const elapsed = (p, st) => {
    if (st !== "running") return p.elapsed_s;
    shownElapsed = Math.max(shownElapsed, (p.elapsed_s || 0) + (performance.now() - progressAt) / 1000);
    return shownElapsed;  // never backwards, whichever clock the kernel's figure started from
  };
  const ticker = setInterval(() => {
    if (((model.get("header") || {}).status || "running") === "running") paintStatus();
  }, 1000);
  const onProgress = () => { progressAt = performance.now(); paintStatus(); };

  buildPrompt();
  loadCheckpoint();
  setText(baselineBox, model.get("baseline") || "…");
  paint();
  paintStatus();
  showDetail(null);

  const onSpans = () => { buildPrompt(); paint(); };
  const onCheckpoint = () => { loadCheckpoint(); paint(); if (state.selected !== null) showDetail(state.selected); };
  // An empty delta comes with a checkpoint: the checkpoint's traits are the whole state again
  // (even those equal to the previous checkpoint's, which sent no change of their own).
  const onDelta = () => {
    if ((model.get("delta") || {}).seq === undefined) loadCheckpoint(); else applyDelta();
    paint();
    if (state.selected !== null) showDetail(state.selected);
  };
  const onBaseline = () => { setText(baselineBox, model.get("baseline") || "…"); };
  const handlers = [
    ["change:spans", onSpans],
    ["change:scores", onCheckpoint],
    ["change:heat", onCheckpoint],
    ["change:muted", onCheckpoint],
    ["change:ranking", onCheckpoint],
    ["change:outputs", onCheckpoint],
    ["change:delta", onDelta],
    ["change:baseline", onBaseline],
    ["change:progress", onProgress],
    ["change:header", () => { paintStatus(); paint(); }],
    ["change:scale", paint],
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  const showSaved = hideSavedView(model);
  return () => { clearInterval(ticker); showSaved(); for (const [name, fn] of handlers) model.off(name, fn); };
}

export default { render };
