"""Any part of the answer, explained in the heat-map widget (js/widget.js) in headless Chromium.

The answer box shows the baseline answer as clickable parts: a click shows that part's own
heat-map from `part_views` (no kernel message), a mouse selection of any range asks the kernel
(`focus`, in code points) and shows its `focus_view`, the matrix shows every part against every
span. The runs are real: a fake backend with a fixed answer of several sentences, each driven
by the prompt line that states its words (FakeBackend's log-probabilities).
"""

from __future__ import annotations

import pytest
from browser_harness import FOREIGN_JS, SCREENSHOTS, Page, empty_state, view_state
from test_widget_browser import CONTRAST_JS, _Recorder, rgba

import prompt_attr
import prompt_attr_widget.views.widget as widget_mod
from prompt_attr_widget.backends.base import Completion
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.views.widget import AttributionWidget

pytestmark = pytest.mark.browser

# The emoji is one code point in Python and two UTF-16 units in JS: offsets after it tell them apart.
ANSWER = "The Pro is discontinued. We offer a free Mini instead. Our store opens at nine. 👋 Thanks!"
PROMPT = """You are a helpful shop assistant.
The Pro model is discontinued.
We offer a free Mini instead of it.
Our store opens at nine each day.
Thanks for asking, say so.
It rains a lot here today.
"""
HOSTILE_ANSWER = 'The Pro <img src=x onerror="window.__pwned=1"> is gone. Open user\u202eexe.txt now. 👋 Thanks!'
HOSTILE_PROMPT = """You are a helpful shop assistant.
The Pro is gone, say <img src=x onerror="window.__pwned=1"> as it is.
Open user\u202eexe.txt now.
Thanks for asking.
"""


class FixedAnswer(FakeBackend):
    """The fake model answering one fixed text; its log-probabilities are the fake's (an answer
    word is likely exactly when the prompt still contains it)."""

    def __init__(self, answer: str = ANSWER):
        super().__init__(logprobs=True)
        self.answer = answer

    async def complete(self, messages, params):
        self.calls += 1
        return Completion(text=self.answer, prompt_tokens=10, completion_tokens=len(self.answer.split()),
                          finish_reason="stop", system_fingerprint="fake-1")


def _run(tmp_path_factory, method: str, prompt: str = PROMPT, answer: str = ANSWER):
    backend = FixedAnswer(answer)
    a = prompt_attr.attribute(prompt, backend=backend, runs_dir=tmp_path_factory.mktemp("runs"), method=method,
                              segment="line", cache=False)
    assert a.status == "finished" and a.baseline == answer
    return a, AttributionWidget.from_attribution(a), backend


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {method: _run(tmp_path_factory, method) for method in ("loo", "surrogate")}


# --- reading the page -------------------------------------------------------------------------------

VIEW_JS = """() => ({
  spans: [...document.querySelectorAll('#root .pa-span')].map((n) => ({
    inline: n.style.backgroundColor, computed: getComputedStyle(n).backgroundColor, aria: n.getAttribute('aria-label'),
    title: n.title, muted: n.classList.contains('pa-muted'), pending: n.classList.contains('pa-pending') })),
  parts: [...document.querySelectorAll('#root .pa-part')].map((n) => ({
    text: n.textContent, selected: n.classList.contains('pa-part-selected'), role: n.getAttribute('role'),
    tabindex: n.getAttribute('tabindex') })),
  explain: document.querySelector('#root .pa-explain-text').textContent,
  note: document.querySelector('#root .pa-explain-note').textContent,
  whole: !document.querySelector('#root .pa-whole').hidden,
  computing: document.querySelector('#root .pa-prompt').classList.contains('pa-computing'),
  legend: document.querySelector('#root .pa-legend').textContent,
  notes: [...document.querySelectorAll('#root .pa-notes li')].map((n) => n.textContent),
  ranking: [...document.querySelectorAll('#root .pa-rank-score')].map((n) => n.textContent),
  drives: [...document.querySelectorAll('#root .pa-rank-drives')].map((n) => n.textContent),
  saved: window.__model.saved.length,
})"""

MATRIX_JS = """() => {
  const m = document.querySelector('#root .pa-matrix');
  const rows = [...m.querySelectorAll('.pa-matrix-row')];
  return { hidden: m.hidden, width: m.clientWidth, scrollWidth: m.scrollWidth,
    rows: rows.map((r) => ({ head: r.querySelector('.pa-matrix-head').textContent, height: r.getBoundingClientRect().height,
      selected: r.classList.contains('pa-row-selected'),
      cells: [...r.querySelectorAll('.pa-cell')].map((c) => ({ inline: c.style.backgroundColor, title: c.title,
        width: c.getBoundingClientRect().width })) })),
    toggle: !document.querySelector('#root .pa-matrix-toggle').hidden,
    note: document.querySelector('#root .pa-parts-note').hidden ? null : document.querySelector('#root .pa-parts-note').textContent };
}"""

# The box of one occurrence of `word` in the answer box's text, to drag the mouse over it.
WORD_BOX_JS = """(word) => {
  const box = document.querySelector('#root .pa-baseline');
  const walk = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const k = n.data.indexOf(word);
    if (k < 0) continue;
    const r = document.createRange();
    r.setStart(n, k);
    r.setEnd(n, k + word.length);
    const b = r.getBoundingClientRect();
    return { left: b.left, right: b.right, y: b.top + b.height / 2 };
  }
  return null;
}"""


def read(page) -> dict:
    return page.page.evaluate(VIEW_JS)


def fmt(x: float) -> str:
    return f"{x + 0.0:.3f}"  # as JS toFixed(3) prints it (-0.0 too)


def assert_heat(spans: list[dict], view: dict) -> None:
    """Every span drawn as `view` (a part view, focus_view, or the widget's own traits) says:
    its colour (alpha to Chromium's 1/255 steps), its noise flag, its score and ± error."""
    assert len(spans) == len(view["heat"])
    errs = view.get("stderr") or [None] * len(spans)
    for i, (node, css, muted, score, err) in enumerate(zip(spans, view["heat"], view["muted"], view["scores"], errs, strict=True)):
        if score is None:
            assert node["pending"] and node["inline"] == "", (i, node)
            continue
        if css:
            got, want = rgba(node["inline"]), rgba(css)
            assert got is not None and got[:3] == want[:3] and abs(got[3] - want[3]) < 0.005, (i, node, css)
        else:
            assert node["inline"] == "" and rgba(node["computed"])[3] == 0, (i, node)
        assert node["muted"] == muted, (i, node, muted)
        assert f"span {i}: score {fmt(score)}" in node["aria"] and node["title"] == node["aria"], (i, node)
        assert (err is not None) == ("±" in node["aria"]), (i, node, err)
        if err is not None:
            assert f"± {fmt(err)}" in node["aria"], (i, node, err)


def assert_shows(page, view: dict, *, label: str | None) -> dict:
    """The heat-map, legend, notes and ranking all show `view`; the line above says what it explains."""
    got = read(page)
    assert_heat(got["spans"], view)
    sc = view["scale"]
    assert got["legend"] == f"{sc['low']}{sc['high']}{sc['note']}"
    assert got["notes"] == view["notes"]
    errs = view.get("stderr") or [None] * len(view["scores"])
    assert got["ranking"] == [fmt(view["scores"][i]) + ("" if errs[i] is None else f" ± {fmt(errs[i])}") for i in view["ranking"]]
    if label is not None:
        assert got["explain"] == f"Explaining: {label}" and got["whole"] and not got["computing"]
    return got


def own_view(w: AttributionWidget) -> dict:
    """The run's own view, as the widget's traits give it."""
    return {"heat": w.heat, "muted": w.muted, "scores": w.scores, "stderr": w.stderr, "scale": w.scale,
            "notes": w.header["notes"], "ranking": w.ranking}


def assert_whole(page, w: AttributionWidget) -> None:
    got = assert_shows(page, own_view(w), label=None)
    assert got["explain"] == "Explaining: the whole answer" and not got["whole"] and not got["computing"]
    assert not any(p["selected"] for p in got["parts"])


def drag_over(page, word: str) -> None:
    """Select `word` in the answer box with the mouse, as a reader does."""
    box = page.page.evaluate(WORD_BOX_JS, word)
    assert box is not None, word
    page.page.mouse.move(box["left"] + 1, box["y"])
    page.page.mouse.down()
    page.page.mouse.move((box["left"] + box["right"]) / 2, box["y"], steps=3)
    page.page.mouse.move(box["right"] - 1, box["y"], steps=3)
    page.page.mouse.up()
    assert page.page.evaluate("window.getSelection().toString()") == word


# --- clicking a part of the answer -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["loo", "surrogate"])
def test_clicking_a_sentence_shows_its_own_heatmap_without_asking_the_kernel(page, runs, method):
    a, w, _ = runs[method]
    assert w.parts_note == "" and len(w.part_views) == len(w.answer_parts) == 4
    assert "".join(p["pre"] + p["text"] for p in w.answer_parts) + w.answer_tail == ANSWER
    page.mount(view_state(w))
    got = read(page)
    assert [p["text"] for p in got["parts"]] == [p["text"] for p in w.answer_parts]
    assert all(p["role"] == "button" and p["tabindex"] == "0" for p in got["parts"])
    assert page.page.inner_text("#root .pa-baseline") == ANSWER  # gaps and parts join to the answer
    assert_whole(page, w)
    # the whole-answer ranking says which sentence each span drives
    assert got["drives"] == [w.drives[i] for i in w.ranking if w.drives[i]] and len(got["drives"]) >= 3

    parts = page.page.locator("#root .pa-part")
    for p, view in enumerate(w.part_views):
        parts.nth(p).click()
        got = assert_shows(page, view, label=view["label"])
        assert [q["selected"] for q in got["parts"]] == [q == p for q in range(len(w.part_views))]
        assert got["drives"] == []  # a part's ranking is its own
        # each sentence is driven by the prompt line that states it (span p + 1; the last by two)
        assert view["ranking"][0] == p + 1 or p == 3
        assert got["legend"] != read_whole_legend(w)

    # the Whole answer button, and a second click on the selected part, return to the run's view
    page.page.click("#root .pa-whole")
    assert_whole(page, w)
    parts.nth(1).click()
    parts.nth(1).click()
    assert_whole(page, w)
    # keyboard: Enter and Space explain the focused part
    parts.nth(2).focus()
    page.page.keyboard.press("Enter")
    assert_shows(page, w.part_views[2], label=w.part_views[2]["label"])
    parts.nth(0).focus()
    page.page.keyboard.press(" ")
    assert_shows(page, w.part_views[0], label=w.part_views[0]["label"])
    # the span detail follows the explained part's scores
    page.page.locator("#root .pa-span").nth(1).click()
    head = page.page.inner_text("#root .pa-detail-head")
    assert head.startswith(f"span 1 · score {fmt(w.part_views[0]['scores'][1])}"), head
    if method == "loo":
        assert "'The Pro is discontinued.'" in w.part_views[0]["label"]
        page.page.mouse.move(0, 0)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target = SCREENSHOTS / "answer-part-selected.png"
        page.page.locator("#wrap").screenshot(path=str(target))
        assert target.stat().st_size > 10_000

    assert read(page)["saved"] == 0, "a part's view needs no message to the kernel"
    assert page.errors == []


def read_whole_legend(w: AttributionWidget) -> str:
    return f"{w.scale['low']}{w.scale['high']}{w.scale['note']}"


# --- a selection of any range ------------------------------------------------------------------------


def test_a_mouse_selection_asks_the_kernel_in_code_points_and_shows_its_answer(page, runs):
    a, w, backend = runs["loo"]
    page.mount(view_state(w))
    drag_over(page, "Thanks")  # after the emoji: code points and UTF-16 units differ by one
    focus = page.page.evaluate("window.__model.get('focus')")
    start = ANSWER.find("Thanks")
    assert (focus["start"], focus["end"]) == (start, start + len("Thanks")), focus
    saved = page.page.evaluate("window.__model.saved")
    assert len(saved) == 1 and saved[0]["focus"] == focus
    got = read(page)
    assert got["computing"] and got["explain"] == "Explaining: the selection \"Thanks\": computing…" and got["whole"]
    assert not any(p["selected"] for p in got["parts"])  # the drag ended inside a part: no click on it

    # the kernel's side, with no model call
    calls = (backend.calls, backend.logprob_calls, backend.embed_calls)
    w.focus = focus
    answer = w.focus_view
    assert (backend.calls, backend.logprob_calls, backend.embed_calls) == calls
    assert answer["seq"] == focus["seq"] and "error" not in answer and (answer["start"], answer["end"]) == (start, start + 6)
    # an answer to an older selection is not this one's
    page.apply({"focus_view": {**answer, "seq": focus["seq"] - 1, "heat": [""] * len(a.spans)}})
    assert read(page)["computing"]
    page.apply({"focus_view": answer})
    assert_shows(page, answer, label=answer["label"])
    assert answer["ranking"][0] == 4  # "Thanks for asking": the line that says it
    page.page.click("#root .pa-whole")
    assert_whole(page, w)

    # a second selection, answered with an error: the run's view, and why
    drag_over(page, "Mini")
    second = page.page.evaluate("window.__model.get('focus')")
    assert second["seq"] > focus["seq"] and (second["start"], second["end"]) == (ANSWER.find("Mini"), ANSWER.find("Mini") + 4)
    w.focus = {**second, "start": second["end"], "end": second["start"]}  # a range Python refuses
    assert "error" in w.focus_view
    page.apply({"focus_view": w.focus_view})
    assert_whole(page, w)
    assert read(page)["note"] == f"the selection could not be explained: {w.focus_view['error']}"

    # the reader left before the answer came: it is not shown
    drag_over(page, "store")
    third = page.page.evaluate("window.__model.get('focus')")
    page.page.click("#root .pa-whole")
    w.focus = third
    page.apply({"focus_view": w.focus_view})
    assert_whole(page, w)
    assert (backend.calls, backend.logprob_calls, backend.embed_calls) == calls
    assert page.errors == []


# --- the matrix -------------------------------------------------------------------------------------


def assert_matrix(m: dict, w: AttributionWidget) -> None:
    assert not m["hidden"] and m["toggle"] and len(m["rows"]) == len(w.part_views)
    for row, part, view in zip(m["rows"], w.answer_parts, w.part_views, strict=True):
        assert row["head"] == " ".join(part["text"].split())[:60]
        assert len(row["cells"]) == len(w.spans)
        for i, cell in enumerate(row["cells"]):
            if view["heat"][i]:
                got, want = rgba(cell["inline"]), rgba(view["heat"][i])
                assert got[:3] == want[:3] and abs(got[3] - want[3]) < 0.005, (i, cell)
            else:
                assert cell["inline"] == "", (i, cell)
            assert view["muted"][i] is False or cell["inline"] == ""  # noise is never coloured
            assert cell["title"].startswith(f"span {i}: score {fmt(view['scores'][i])}")
            assert ("(below noise floor)" in cell["title"]) == view["muted"][i]


def test_the_matrix_shows_every_part_against_every_span_and_a_row_explains_its_part(page, runs):
    _, w, _ = runs["surrogate"]
    page.mount(view_state(w))
    assert page.page.evaluate(MATRIX_JS)["hidden"]
    page.page.click("#root .pa-matrix-toggle")
    m = page.page.evaluate(MATRIX_JS)
    assert_matrix(m, w)
    assert any(c["inline"] == "" for r in m["rows"] for c in r["cells"]) and any(c["inline"] for r in m["rows"] for c in r["cells"])
    rows = page.page.locator("#root .pa-matrix-row")
    rows.nth(1).click()
    assert_shows(page, w.part_views[1], label=w.part_views[1]["label"])
    m = page.page.evaluate(MATRIX_JS)
    assert [r["selected"] for r in m["rows"]] == [p == 1 for p in range(len(w.part_views))]
    assert [p["selected"] for p in read(page)["parts"]] == [p == 1 for p in range(len(w.part_views))]
    page.page.mouse.move(0, 0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / "answer-matrix.png"
    page.page.locator("#wrap").screenshot(path=str(target))
    assert target.stat().st_size > 10_000
    rows.nth(2).focus()
    page.page.keyboard.press("Enter")
    assert_shows(page, w.part_views[2], label=w.part_views[2]["label"])
    page.page.click("#root .pa-matrix-toggle")
    assert page.page.evaluate(MATRIX_JS)["hidden"]
    assert read(page)["saved"] == 0
    assert page.errors == []


def test_the_matrix_stays_compact_for_200_spans(browser, site, tmp_path_factory):
    lines = [f"filler line {k} of the notes." for k in range(196)]
    for k, line in zip((10, 60, 120, 180), PROMPT.splitlines()[1:5], strict=True):
        lines[k] = line
    a, w, _ = _run(tmp_path_factory, "loo", prompt="\n".join(lines))
    assert len(a.spans) == 196 and len(w.part_views) == 4
    p = Page(browser, site, width=900, height=700)
    try:
        p.mount(view_state(w))
        p.page.click("#root .pa-matrix-toggle")
        m = p.page.evaluate(MATRIX_JS)
        assert_matrix(m, w)
        assert all(c["width"] <= 5 for r in m["rows"] for c in r["cells"])  # a few px per span
        assert all(r["height"] <= 24 for r in m["rows"])  # one line per part
        assert p.page.evaluate("document.documentElement.scrollWidth") <= 900  # the grid scrolls, never the page
        assert m["width"] <= 900
        assert p.errors == []
    finally:
        p.context.close()


def test_without_part_views_the_matrix_is_hidden_and_the_note_says_why(page, runs):
    _, w, _ = runs["loo"]
    state = {**view_state(w), "part_views": [], "parts_note": "run X was saved before prompt_attr kept each answer token"}
    page.mount(state)
    m = page.page.evaluate(MATRIX_JS)
    assert m["hidden"] and not m["toggle"] and m["note"] == state["parts_note"]
    page.page.locator("#root .pa-part").nth(0).click()  # nothing to show but why
    got = read(page)
    assert got["explain"] == "Explaining: the whole answer" and got["note"] == state["parts_note"]
    # and the note goes when the parts can be scored after all
    page.apply({"part_views": w.part_views, "parts_note": ""})
    m = page.page.evaluate(MATRIX_JS)
    assert m["toggle"] and m["note"] is None
    assert page.errors == []


# --- untrusted answers --------------------------------------------------------------------------------


def test_a_hostile_answer_stays_text_in_parts_matrix_and_labels(page, tmp_path_factory):
    a, w, _ = _run(tmp_path_factory, "loo", prompt=HOSTILE_PROMPT, answer=HOSTILE_ANSWER)
    assert w.part_views and any("<img" in p["text"] for p in w.answer_parts)
    page.mount(view_state(w))
    assert page.page.inner_text("#root .pa-baseline") == HOSTILE_ANSWER
    assert page.page.evaluate("document.querySelector('#root .pa-baseline').textContent") == HOSTILE_ANSWER
    # the bidi control is drawn alone, marked, and applies to nothing
    assert page.page.evaluate("document.querySelectorAll('#root .pa-baseline .pa-bidi').length") == 1
    for p in range(len(w.part_views)):
        page.page.locator("#root .pa-part").nth(p).click()
        assert_shows(page, w.part_views[p], label=w.part_views[p]["label"])
    page.page.click("#root .pa-matrix-toggle")
    drag_over(page, "Thanks")  # offsets still code points with a bidi control and an emoji before
    focus = page.page.evaluate("window.__model.get('focus')")
    assert (focus["start"], focus["end"]) == (HOSTILE_ANSWER.find("Thanks"), HOSTILE_ANSWER.find("Thanks") + 6)
    page.page.wait_for_timeout(300)  # time for an onerror to fire
    found = page.page.evaluate(FOREIGN_JS, "#root")
    assert found["pwned"] == "undefined" and found["handlers"] == []
    assert set(found["tags"]) <= {"div", "span", "button", "ul", "li", "ol", "table", "tbody", "tr", "th", "td"}, found
    heads = page.page.eval_on_selector_all("#root .pa-matrix-head", "ns => ns.map(n => n.textContent)")
    assert any("<img src=x" in h for h in heads)
    assert page.errors == []


# --- live runs ----------------------------------------------------------------------------------------


def test_a_part_selected_mid_run_follows_the_live_part_views(page, monkeypatch, tmp_path):
    rec = _Recorder()
    rec.install(monkeypatch)
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)  # a delta per event
    monkeypatch.setattr(widget_mod, "PARTS_INTERVAL_S", 0)  # and the parts refitted with each
    w = AttributionWidget()
    mine = w.comm.comm_id
    rec.updates.clear()
    a = prompt_attr.attribute(PROMPT, backend=FixedAnswer(), runs_dir=tmp_path / "runs", method="loo", segment="line",
                              cache=False, on_event=w)
    assert a.status == "finished"
    updates = [u["state"] for u in rec.updates if u["comm_id"] == mine]
    assert sum("part_views" in u for u in updates) >= 3

    page.mount(empty_state())
    model: dict = {}  # the traits the page's model holds, as Python sent them
    picked = None  # the update at which the part was selected
    refreshed = 0
    for step, changes in enumerate(updates):
        before = read(page)
        page.apply(changes)
        model.update(changes)
        got = read(page)
        if model.get("baseline") and not model.get("answer_parts"):
            assert got["parts"] == [] and page.page.inner_text("#root .pa-baseline") == ANSWER
        if model.get("answer_parts"):  # the answer box is rebuilt in its parts
            assert [p["text"] for p in got["parts"]] == [p["text"] for p in model["answer_parts"]]
        running = (model.get("header") or {}).get("status") == "running"
        if picked is None and running and model.get("part_views"):
            page.page.locator("#root .pa-part").nth(0).click()
            picked = step
            got = read(page)
        if picked is not None:
            view = model["part_views"][0]
            assert_shows(page, view, label=view["label"])  # deltas of the whole answer do not repaint it
            if "part_views" in changes and step > picked and got["spans"] != before["spans"]:
                refreshed += 1
    assert picked is not None and refreshed >= 1, (picked, refreshed)
    assert read(page)["saved"] == 0

    # back to the run's own view: exactly what a view of the finished run shows
    page.page.click("#root .pa-whole")
    final = AttributionWidget.from_attribution(prompt_attr.load_run(a.run_id, runs_dir=tmp_path / "runs"))
    assert_whole(page, final)
    assert final.part_views[0]["heat"] == model["part_views"][0]["heat"]
    assert page.errors == []


# --- readability ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_new_text_is_readable(page, runs, theme):
    _, w, _ = runs["loo"]
    if theme == "dark":
        page.page.evaluate("document.body.classList.add('dark')")
    page.mount(view_state(w))
    page.page.click("#root .pa-matrix-toggle")
    page.page.locator("#root .pa-part").nth(1).click()
    page.page.mouse.move(0, 0)
    ratios = page.page.evaluate(CONTRAST_JS, [".pa-explain-text", ".pa-whole", ".pa-matrix-toggle", ".pa-part-selected",
                                              ".pa-matrix-head", ".pa-part"])
    page.page.click("#root .pa-whole")
    ratios |= page.page.evaluate(CONTRAST_JS, [".pa-rank-drives"])
    for selector, ratio in ratios.items():
        assert ratio is not None and ratio >= 4.5, (theme, selector, ratio)
    assert page.errors == []
