// prompt_attr comparison widget (anywidget ES module, no build step).
//
// Traits (set once; a comparison does not change):
//   header  {run_a, run_b, same_prompt, same_answer, comparable, unit_a, unit_b, cost,
//            legend: {low, high, note, colours: [css, css]}}
//   rows    [{status, text_a, text_b, score_a, score_b, delta, significant_a, significant_b,
//             heat_a, heat_b, muted_a, muted_b}]  spans aligned by text, with what each side
//            draws: its colour on the scale both runs share ("" for none) and whether it is
//            below its run's noise floor (muted: uncoloured)
//   answer  [[op, words]]  op: equal | delete | insert
//   changes [[what, key, value_a, value_b]]  config and model differences
// Python decides the colours, the noise and the figures; this file applies them.
// Texts are untrusted: they only reach the DOM as text nodes (appendText in common.js,
// which Python prepends to this file), and a colour only if it is an rgba() of numbers.

const MARK = { same: "", changed: "~", added: "+", removed: "−" };

function num(v, signed) {
  if (v === null || v === undefined) return "—";
  return (signed && v > 0 ? "+" : "") + Number(v).toFixed(3);
}

function cell(text, score, heat, muted) {
  const td = el("td", "pa-cmp-text");
  if (text === null || text === undefined) return td;
  const span = el("span", "pa-span", text);
  span.style.backgroundColor = colour(heat);
  span.classList.toggle("pa-muted", muted === true);
  span.title = `score ${num(score)}${muted === true ? " (below noise floor)" : ""}`;
  td.appendChild(span);
  return td;
}

function legend(lg) {
  const box = el("div", "pa-legend");
  const scale = el("span", "pa-legend-scale");
  const [from, to] = (lg.colours || []).map(colour);
  scale.style.background = from && to ? `linear-gradient(to right, ${from}, ${to})` : "";
  box.append(el("span", "pa-legend-label", lg.low || ""), scale, el("span", "pa-legend-label", lg.high || ""),
    el("span", "pa-legend-note", lg.note || ""));
  return box;
}

function table(rows) {
  const t = el("table", "pa-cmp-table");
  const head = el("tr");
  for (const h of ["", "A", "score", "B", "score", "Δ"]) head.appendChild(el("th", null, h));
  t.appendChild(el("thead")).appendChild(head);
  const body = t.appendChild(el("tbody"));
  for (const r of rows) {
    const tr = el("tr", `pa-cmp-row pa-cmp-${r.status}`);
    tr.title = r.status;
    tr.appendChild(el("td", "pa-cmp-mark", MARK[r.status] ?? "?"));
    tr.appendChild(cell(r.text_a, r.score_a, r.heat_a, r.muted_a));
    tr.appendChild(el("td", "pa-cmp-num", r.text_a === null ? "" : num(r.score_a)));
    tr.appendChild(cell(r.text_b, r.score_b, r.heat_b, r.muted_b));
    tr.appendChild(el("td", "pa-cmp-num", r.text_b === null ? "" : num(r.score_b)));
    tr.appendChild(el("td", "pa-cmp-num pa-cmp-delta", num(r.delta, true)));
    body.appendChild(tr);
  }
  return t;
}

function answer(ops) {
  const box = el("div", "pa-diff");
  for (const [op, words] of ops) {
    const tag = op === "insert" ? "ins" : op === "delete" ? "del" : "span";
    const cls = op === "insert" ? "pa-diff-add" : op === "delete" ? "pa-diff-del" : "pa-diff-same";
    box.appendChild(el(tag, cls, words));
    box.appendChild(document.createTextNode(" "));
  }
  return box;
}

function draw(model, root) {
  const h = model.get("header") || {};
  root.replaceChildren();
  root.appendChild(el("div", "pa-h",
    `A ${h.run_a ?? "?"}  vs  B ${h.run_b ?? "?"}: ${h.same_prompt ? "same prompt" : "prompts differ"}, ` +
    `${h.same_answer ? "same answer" : "answers differ"}`));
  if (h.comparable === false) {
    root.appendChild(el("div", "pa-reason", `scores not comparable: A in ${h.unit_a}, B in ${h.unit_b} (no deltas)`));
  }
  if (h.legend) root.appendChild(legend(h.legend));
  root.appendChild(table(model.get("rows") || []));
  root.appendChild(el("div", "pa-h2", "answer, A to B"));
  root.appendChild(answer(model.get("answer") || []));
  const changes = model.get("changes") || [];
  if (changes.length) {
    const list = el("ul", "pa-notes");
    for (const [what, key, a, b] of changes) list.appendChild(el("li", null, `${what} ${key}: ${a} → ${b}`));
    root.appendChild(list);
  }
  if (h.cost) root.appendChild(el("div", "pa-stats", h.cost));
}

export default {
  render({ model, el: host }) {
    const root = el("div", "prompt-attr pa-compare");
    host.appendChild(root);
    const redraw = () => draw(model, root);
    redraw();
    for (const name of ["header", "rows", "answer", "changes"]) model.on(`change:${name}`, redraw);
    const showSaved = hideSavedView(model);
    return () => {
      showSaved();
      for (const name of ["header", "rows", "answer", "changes"]) model.off(`change:${name}`, redraw);
    };
  },
};
