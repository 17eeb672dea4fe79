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
//   muted      [bool]         below the noise floor, or moves the answer's probability only:
//              uncoloured, and labelled so
//   verdicts   [text]         per span, its flag in words: the noise floor and the behavioural
//              check ("changes the answer: the target is gone"; "" for none)
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
//   answer_parts [{pre, text, kind}]  the baseline answer in its parts (sentences, list items,
//              lines of code), each with the gap before it; answer_tail: text after the last
//   part_views [view]  per part, what the heat-map shows when it is explained: {label, start, end,
//              scores, stderr, resolved, heat, muted, ranking, scale, notes} ([]: none scored)
//   parts_note text: why the parts cannot be scored ("" when they can)
//   drives     [text]  per span, the answer sentence it moves most ("drives: '…'", or "")
//   focus      {seq, start, end}  set here: a selected range of the answer, in code points
//   focus_view {seq, ...a view} or {seq, error}  Python's answer to `focus`
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

// Text on one line, cut to n characters (code points: an emoji is never split in two).
function cut(text, n) {
  const chars = [...String(text).replace(/\s+/g, " ").trim()];
  return chars.length > n ? chars.slice(0, n - 1).join("") + "…" : chars.join("");
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function render({ model, el: root }) {
  root.classList.add("prompt-attr");
  const state = { scores: [], resolved: [], evals: [], stderr: [], heat: [], muted: [], verdicts: [], ranking: [],
    outputs: {}, selected: null };

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
  // What the heat-map explains: the run's own view, or one part of the answer.
  const explain = el("div", "pa-explain");
  explain.setAttribute("aria-live", "polite");
  const explainText = el("span", "pa-explain-text");
  const explainNote = el("span", "pa-explain-note");
  const whole = el("button", "pa-btn pa-whole", "Whole answer");
  whole.type = "button";
  whole.addEventListener("click", () => showView(null));
  const matrixToggle = el("button", "pa-btn pa-matrix-toggle", "Matrix");
  matrixToggle.type = "button";
  matrixToggle.title = "every answer part against every prompt span";
  matrixToggle.addEventListener("click", () => { matrixOpen = !matrixOpen; buildMatrix(); paintView(); });
  explain.append(explainText, whole, explainNote, matrixToggle);
  const matrix = el("div", "pa-matrix");
  const partsNote = el("div", "pa-parts-note");
  root.append(top, bar, stats, explain, matrix, partsNote, legend, notes, body);

  // null: the run's own view (state, the checkpoint and deltas); else one part of the answer:
  // {part: p, text, data: part_views[p]}, or a selection {seq, text, data: its focus_view}, pending
  // (data: what was shown before, dimmed) until the focus_view of that seq arrives.
  let view = null;
  let viewNote = "";  // why the last request could not be explained (shown with the run's view)
  let focusSeq = 0;  // the latest focus this view sent
  let matrixOpen = false;
  let partNodes = [], rowNodes = [];
  const shown = () => (view ? view.data : state);

  let spanNodes = [];

  function buildPrompt() {
    prompt.replaceChildren();
    spanNodes = [];
    (model.get("spans") || []).forEach((span, i) => {
      if (span.pre) appendText(prompt, span.pre);
      const node = el("span", "pa-span", span.text);
      node.dataset.index = String(i);
      pressable(node, () => select(i));
      node.addEventListener("mouseenter", () => { if (state.selected === null) showDetail(i); });
      prompt.appendChild(node);
      spanNodes.push(node);
    });
    const tail = model.get("tail");
    if (tail) appendText(prompt, tail);
  }

  // Noise is never shown as signal: Python flags it (views/scale.py) and sends no colour.
  function isNoise(i) {
    return shown().muted[i] === true;
  }

  // the span's flag in Python's words; a live score not judged yet is only "below the noise floor"
  function why(i) {
    const said = (shown().verdicts || [])[i];
    return said || (isNoise(i) ? "below the noise floor" : "");
  }

  function fmtErr(i) {
    const e = shown().stderr[i];
    return e === null || e === undefined ? "" : ` ± ${Number(e).toFixed(3)}`;
  }

  function paint() {
    const h = model.get("header") || {};
    const v = shown(), own = v === state;  // a part's view brings its own legend and notes
    const sc = (own ? model.get("scale") : v.scale) || {};
    spanNodes.forEach((node, i) => {
      const s = v.scores[i];
      const pending = s === null || s === undefined;
      const muted = isNoise(i);
      node.style.backgroundColor = pending ? "" : colour(v.heat[i]);
      node.classList.toggle("pa-pending", pending);
      node.classList.toggle("pa-muted", muted);
      node.classList.toggle("pa-unresolved", !pending && v.resolved[i] === false);
      node.classList.toggle("pa-selected", state.selected === i);
      const label = `span ${i}: score ${fmtScore(s)}${pending ? "" : fmtErr(i)}${why(i) ? ` (${why(i)})` : ""}` +
        (!pending && v.resolved[i] === false ? " (share of an unrefined group)" : "");
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
    notes.replaceChildren(...((own ? h.notes : v.notes) || []).map((n) => el("li", null, n)));
    paintRanking();
    paintView();
  }

  function paintRanking() {
    const spans = model.get("spans") || [];
    const v = shown();
    const drives = v === state ? model.get("drives") || [] : [];  // which sentence a span drives: the whole answer's
    ranking.replaceChildren(...(v.ranking || []).filter((i) => spans[i]).map((i) => {
      const s = v.scores[i];
      const li = el("li", "pa-rank");
      const text = (spans[i] ? spans[i].text : "").replace(/\s+/g, " ");
      li.append(el("span", "pa-rank-score", fmtScore(s) + fmtErr(i)),
        el("span", "pa-rank-text", text.length > 70 ? text.slice(0, 69) + "…" : text));
      if (why(i)) li.append(el("span", isNoise(i) ? "pa-rank-noise" : "pa-rank-verdict", ` (${why(i).split(":")[0]})`));
      if (drives[i]) li.append(el("div", "pa-rank-drives", drives[i]));
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
    const v = shown();
    const s = v.scores[i];
    const evalId = state.evals[i];  // the deletion that scored it, the same whichever part is explained
    const output = evalId !== null && evalId !== undefined ? state.outputs[evalId] : undefined;
    const head = el("div", "pa-detail-head", `span ${i} · score ${fmtScore(s)}${fmtErr(i)}` +
      (why(i) ? ` · ${why(i)}` : "") +
      (v.resolved[i] === false ? " · share of an unrefined group" : ""));
    const quote = el("div", "pa-detail-span", spans[i].text);
    const diff = el("div", "pa-diff");
    const h = model.get("header") || {};
    const target = v === state ? h.target : view.text;
    if (h.scorer === "logprob" && (output === undefined || output === null)) {
      setText(diff, "Not regenerated: this run scores how much less likely the baseline answer" +
        (target ? ` (its part ${JSON.stringify(target)})` : "") + " becomes without the span.");
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

  // The answer as its parts, each a button that explains it; plain text until Python sends them.
  function buildAnswer() {
    baselineBox.replaceChildren();
    partNodes = [];
    const parts = model.get("answer_parts") || [];
    baselineBox.title = parts.length ? "click a part of the answer to see what caused it, or select any words of it" : "";
    if (!parts.length) {
      appendText(baselineBox, model.get("baseline") || "…");
      return;
    }
    parts.forEach((part, p) => {
      if (part.pre) appendText(baselineBox, part.pre);
      const node = el("span", "pa-part", part.text);
      node.dataset.index = String(p);
      // a drag that selected text inside the part is a selection (mouseup below), not a click
      pressable(node, (e) => { if (e.type !== "click" || window.getSelection().isCollapsed) selectPart(p); });
      baselineBox.appendChild(node);
      partNodes.push(node);
    });
    const tail = model.get("answer_tail");
    if (tail) appendText(baselineBox, tail);
  }

  // The reader's selection in the answer as code-point offsets, as Python counts them (JS strings
  // count UTF-16 units: an emoji is two); null unless it is a non-empty range inside the answer.
  // The box's text is the answer exactly (appendText keeps every character, bidi controls too).
  function selectedRange() {
    const sel = window.getSelection();
    if (!sel || sel.isCollapsed || !sel.rangeCount || !model.get("baseline")) return null;
    const range = sel.getRangeAt(0);
    if (!baselineBox.contains(range.commonAncestorContainer)) return null;
    const before = document.createRange();
    before.setStart(baselineBox, 0);
    before.setEnd(range.startContainer, range.startOffset);
    const start = [...before.toString()].length, text = range.toString();
    return { start, end: start + [...text].length, text };
  }

  // Any range: one round-trip to the kernel (no model call), answered in focus_view.
  baselineBox.addEventListener("mouseup", () => {
    const range = selectedRange();
    if (!range) return;
    focusSeq = Math.max(focusSeq, (model.get("focus") || {}).seq || 0) + 1;  // above any other view's too
    showView({ seq: focusSeq, text: range.text, data: shown(), pending: true });
    model.set("focus", { seq: focusSeq, start: range.start, end: range.end });
    model.save_changes();
  });

  // A part's view is already here (part_views): switching to it sends nothing to the kernel.
  function selectPart(p) {
    const data = (model.get("part_views") || [])[p];
    if (view && view.part === p) showView(null);
    else if (data) showView({ part: p, text: ((model.get("answer_parts") || [])[p] || {}).text, data });
    else showView(null, model.get("parts_note") || "the answer's parts are not scored yet");
  }

  function showView(next, note = "") {
    view = next;
    viewNote = note;
    refresh();
  }

  function refresh() {
    paint();
    if (state.selected !== null) showDetail(state.selected);
  }

  function paintView() {
    const h = model.get("header") || {};
    let text = h.target ? `the run's target ${JSON.stringify(h.target)}` : "the whole answer";
    if (view) text = view.pending ? `the selection ${JSON.stringify(cut(view.text, 60))}: computing…` : view.data.label;
    setText(explainText, `Explaining: ${text}`);
    setText(explainNote, viewNote);
    whole.hidden = !view;
    whole.textContent = h.target ? "Run's target" : "Whole answer";
    prompt.classList.toggle("pa-computing", Boolean(view && view.pending));
    prompt.setAttribute("aria-busy", String(Boolean(view && view.pending)));
    const picked = view ? view.part : undefined;
    partNodes.forEach((n, p) => { n.classList.toggle("pa-part-selected", p === picked); n.setAttribute("aria-pressed", String(p === picked)); });
    rowNodes.forEach((n, p) => n.classList.toggle("pa-row-selected", p === picked));
  }

  // One row per answer part, one cell per prompt span, coloured as that part's heat-map.
  function buildMatrix() {
    const views = model.get("part_views") || [];
    const parts = model.get("answer_parts") || [];
    const note = views.length ? "" : model.get("parts_note") || "";
    matrixToggle.hidden = !views.length;
    matrixToggle.setAttribute("aria-pressed", String(matrixOpen));
    setText(partsNote, note);
    partsNote.hidden = !note;
    matrix.hidden = !(matrixOpen && views.length);
    matrix.replaceChildren();
    rowNodes = [];
    if (matrix.hidden) return;
    // cells narrow with the prompt, so 200 spans fit in about 800 px; a wider grid scrolls
    const n = (model.get("spans") || []).length;
    matrix.style.setProperty("--pa-cell", `${Math.max(4, Math.min(16, Math.floor(600 / Math.max(n, 1))))}px`);
    const rows = views.map((v, p) => {
      const text = cut(parts[p] ? parts[p].text : v.label, 60);
      const row = el("tr", "pa-matrix-row");
      pressable(row, () => selectPart(p));
      row.setAttribute("aria-label", `explain answer part ${p}: ${text}`);
      const cells = el("td", "pa-matrix-cells");
      (v.scores || []).forEach((s, i) => {
        const cell = el("span", "pa-cell");
        const pending = s === null || s === undefined;
        cell.style.backgroundColor = pending ? "" : colour(v.heat[i]);
        cell.classList.toggle("pa-pending", pending);
        const err = pending || v.stderr[i] === null || v.stderr[i] === undefined ? "" : ` ± ${Number(v.stderr[i]).toFixed(3)}`;
        cell.title = `span ${i}: score ${fmtScore(s)}${err}${v.muted[i] ? " (below noise floor)" : ""}`;
        cells.appendChild(cell);
      });
      row.append(el("th", "pa-matrix-head", text), cells);
      rowNodes.push(row);
      return row;
    });
    const table = el("table", "pa-matrix-table");
    table.appendChild(el("tbody")).append(...rows);
    matrix.appendChild(table);
  }

  function loadCheckpoint() {
    state.scores = [...(model.get("scores") || [])];
    state.resolved = [...(model.get("resolved") || [])];
    state.evals = [...(model.get("evals") || [])];
    state.stderr = [...(model.get("stderr") || [])];
    state.heat = [...(model.get("heat") || [])];
    state.muted = [...(model.get("muted") || [])];
    state.verdicts = [...(model.get("verdicts") || [])];
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
      state.verdicts[i] = "";  // a live score: judged at the next checkpoint
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
  buildAnswer();
  buildMatrix();
  paint();
  paintStatus();
  showDetail(null);

  const onSpans = () => { buildPrompt(); buildMatrix(); paint(); };
  const onCheckpoint = () => { loadCheckpoint(); paint(); if (state.selected !== null) showDetail(state.selected); };
  // An empty delta comes with a checkpoint: the checkpoint's traits are the whole state again
  // (even those equal to the previous checkpoint's, which sent no change of their own).
  const onDelta = () => {
    if ((model.get("delta") || {}).seq === undefined) loadCheckpoint(); else applyDelta();
    paint();
    if (state.selected !== null) showDetail(state.selected);
  };
  const onAnswer = () => {
    buildAnswer();
    if (view && view.part !== undefined && !partNodes[view.part]) view = null;
    paint();
  };
  // A live run refits every part as evaluations arrive: an explained part shows its new view.
  const onPartViews = () => {
    if (view && view.part !== undefined) {
      const data = (model.get("part_views") || [])[view.part];
      view = data ? { ...view, data } : null;
    }
    buildMatrix();
    refresh();
  };
  // Only the answer to the latest selection, and only while the reader still waits for it.
  const onFocusView = () => {
    const answer = model.get("focus_view") || {};
    if (!view || !view.pending || answer.seq !== view.seq) return;
    if (answer.error) showView(null, `the selection could not be explained: ${answer.error}`);
    else showView({ seq: answer.seq, text: view.text, data: answer });
  };
  const handlers = [
    ["change:spans", onSpans],
    ["change:scores", onCheckpoint],
    ["change:heat", onCheckpoint],
    ["change:muted", onCheckpoint],
    ["change:verdicts", onCheckpoint],
    ["change:ranking", onCheckpoint],
    ["change:outputs", onCheckpoint],
    ["change:delta", onDelta],
    ["change:baseline", onAnswer],
    ["change:answer_parts", onAnswer],
    ["change:answer_tail", onAnswer],
    ["change:part_views", onPartViews],
    ["change:parts_note", buildMatrix],
    ["change:drives", paintRanking],
    ["change:focus_view", onFocusView],
    ["change:progress", onProgress],
    ["change:header", () => { paintStatus(); paint(); }],
    ["change:scale", paint],
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  const showSaved = hideSavedView(model);
  return () => { clearInterval(ticker); showSaved(); for (const [name, fn] of handlers) model.off(name, fn); };
}

export default { render };
