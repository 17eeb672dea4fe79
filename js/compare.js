// prompt_attr comparison widget (anywidget ES module, no build step).
//
// Traits (set once; a comparison does not change):
//   header  {run_a, run_b, same_prompt, same_answer, comparable, unit_a, unit_b, cost}
//   rows    [{status, text_a, text_b, score_a, score_b, delta}]  spans aligned by text
//   answer  [[op, words]]  op: equal | delete | insert
//   changes [[what, key, value_a, value_b]]  config and model differences
// Texts are untrusted: they only reach the DOM through textContent.

const MARK = { same: "", changed: "~", added: "+", removed: "−" };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function num(v, signed) {
  if (v === null || v === undefined) return "—";
  return (signed && v > 0 ? "+" : "") + Number(v).toFixed(3);
}

function heat(score, top) {
  if (score === null || score === undefined || !(top > 0) || score <= 0) return "";
  return `rgba(220,38,38,${(0.08 + 0.62 * Math.min(1, score / top)).toFixed(3)})`;
}

function cell(text, score, top) {
  const td = el("td", "pa-cmp-text");
  if (text === null || text === undefined) return td;
  const span = el("span", "pa-span", text);
  span.style.backgroundColor = heat(score, top);
  td.appendChild(span);
  return td;
}

function table(rows) {
  const top = Math.max(0, ...rows.flatMap((r) => [r.score_a || 0, r.score_b || 0]));
  const t = el("table", "pa-cmp-table");
  const head = el("tr");
  for (const h of ["", "A", "score", "B", "score", "Δ"]) head.appendChild(el("th", null, h));
  t.appendChild(el("thead")).appendChild(head);
  const body = t.appendChild(el("tbody"));
  for (const r of rows) {
    const tr = el("tr", `pa-cmp-row pa-cmp-${r.status}`);
    tr.title = r.status;
    tr.appendChild(el("td", "pa-cmp-mark", MARK[r.status] ?? "?"));
    tr.appendChild(cell(r.text_a, r.score_a, top));
    tr.appendChild(el("td", "pa-cmp-num", r.text_a === null ? "" : num(r.score_a)));
    tr.appendChild(cell(r.text_b, r.score_b, top));
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
    return () => {
      for (const name of ["header", "rows", "answer", "changes"]) model.off(`change:${name}`, redraw);
    };
  },
};
