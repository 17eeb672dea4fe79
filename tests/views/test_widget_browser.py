"""The heat-map widget's front-end (js/widget.js, js/widget.css) in a real headless Chromium.

The page, the harness and the `browser`, `site` and `page` fixtures live in
browser_harness.py (shared with test_hostile.py). Live updates are replayed
from the comm messages a Python widget really sent during a run.
"""

from __future__ import annotations

import json
import re

import pytest
from browser_harness import SCREENSHOTS, Page, empty_state, view_state

import prompt_attr
import prompt_attr_widget.views.widget as widget_mod
from prompt_attr_widget.backends.base import Completion
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.scale import live_significant, paint, scale_max, scale_top, verdict
from prompt_attr_widget.views.widget import AttributionWidget

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'
PROMPT = f"""You are a Travel Guide for visitors to Paris.
{SCRIPT} Ignore the markup above.
{IMG} this line has an image tag.
Always Answer In French, Please, Politely.
The Eiffel Tower opens at nine.
it is a calm day and nothing else matters here.
"""
# More than 2 / group_fraction spans, so the default method really runs hierarchical passes.
LONG_PROMPT = " ".join(
    [
        "You are a Travel Guide for Paris.",
        "it is sunny.",
        "the river is wide.",
        f"{SCRIPT} ignore this.",
        "bread is fresh.",
        "Always Answer In French.",
        "museums open late.",
        "trains are quick.",
        "The Eiffel Tower opens at Nine.",
        "cafes are busy.",
        "streets are old.",
        "parks are green.",
        "Mention The Louvre Museum.",
        "bikes are cheap.",
    ]
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished fake-backend LOO run on the hostile prompt, and its widget."""
    runs = tmp_path_factory.mktemp("runs")
    a = prompt_attr.attribute(PROMPT, backend=FakeBackend(), runs_dir=runs, method="loo", cache=False)
    assert a.status == "finished"
    w = AttributionWidget.from_attribution(a)
    return a, w



_RGBA = re.compile(r"rgba?\(\s*(\d+),\s*(\d+),\s*(\d+)(?:,\s*([\d.]+))?\s*\)")


def rgba(css: str) -> tuple[int, int, int, float] | None:
    m = _RGBA.fullmatch(css.strip()) if css else None
    if not m:
        return None
    r, g, b, a = m.groups()
    return int(r), int(g), int(b), 1.0 if a is None else float(a)


def expected_paint(record) -> list[tuple[str, bool]]:
    """What views/scale.py has every view draw for a record: (CSS colour, muted) per span."""
    scores = {s.index: s for s in record.attribution}
    top = scale_max(record)
    return [paint(*((scores[i].score, scores[i].significant) if i in scores else (None, None)), top)
            for i in range(len(record.spans))]


def assert_colours(spans: list[dict], want: list[tuple[str, bool]], scores: list) -> None:
    """Every span shows the colour Python's scale gives it: none while pending or below the
    noise floor (computed style too, so nothing else paints it), else the heat red."""
    assert len(spans) == len(want) == len(scores)
    for node, (css, muted), score in zip(spans, want, scores, strict=True):
        got = rgba(node["inline"])
        if score is None:
            assert node["inline"] == "" and node["pending"], node
        elif not css:
            assert node["inline"] == "" and rgba(node["computed"])[3] == 0 and not node["pending"], node
            assert muted == ("(below the noise floor)" in node["aria"] or "(moves its probability only" in node["aria"]), node
        else:
            assert got is not None and got[:3] == (220, 38, 38), node
            assert abs(got[3] - rgba(css)[3]) < 0.005, (node, css)  # Chromium keeps alpha in 1/255 steps
            assert not node["pending"] and "below the noise floor" not in node["aria"]


# --- the finished heat-map ------------------------------------------------------------------------


def test_finished_heatmap_colours_detail_keyboard_and_inertness(page, finished):
    a, w = finished
    page.mount(view_state(w))
    spans = page.spans()
    scores = [s.score for s in a.spans]

    # one .pa-span per span, in order, with the span's text
    assert [s["index"] for s in spans] == list(range(len(a.spans)))
    assert [s["text"] for s in spans] == [s.text for s in a.spans]
    # every span above the noise floor is coloured (computed style too, so the CSS does not
    # hide it); spans below it show no heat at all, and say why
    assert True in w.significant and False in w.significant, "the test prompt needs signal and noise"
    for node, significant in zip(spans, w.significant, strict=True):
        if significant:
            assert rgba(node["computed"]) is not None and rgba(node["computed"])[3] > 0, node
            assert "below the noise floor" not in node["aria"]
        else:  # below the floor, or moving the answer's probability only: says which
            assert rgba(node["computed"])[3] == 0 and f"({verdict({s.index: s for s in a.record.attribution}[node['index']])})" in node["aria"], node
    assert_colours(spans, expected_paint(a.record), w.scores)
    alphas = [rgba(s["computed"])[3] for s in spans]
    top = max(range(len(scores)), key=lambda i: scores[i])
    assert sorted(scores)[-1] > sorted(scores)[-2], "the test prompt needs a unique top span"
    assert alphas[top] == max(alphas) and alphas.count(max(alphas)) == 1
    for i in range(len(scores)):  # colour order follows score order (noise is all uncoloured)
        for j in range(len(scores)):
            if scores[i] > scores[j] + 1e-6:
                assert alphas[i] > alphas[j] or alphas[i] == alphas[j] == 0, (i, j)

    # title and aria-label carry the score
    for node, s in zip(spans, w.scores, strict=True):
        assert f"score {s:.3f}" in node["title"]
        assert f"score {s:.3f}" in node["aria"]

    locator = page.page.locator("#root .pa-span")
    baseline = a.baseline
    # hover: score and the ablated answer of that span
    for i in range(len(a.spans)):
        locator.nth(i).hover()
        d = page.detail()
        assert d["head"].startswith(f"span {i} · score {w.scores[i]:.3f}"), d
        assert d["quote"] == a.spans[i].text
        assert d["answer"] == a.spans[i].ablated_output, (i, d)
    # the diff against the baseline marks what the culprit's removal deleted
    locator.nth(top).hover()
    removed = page.page.eval_on_selector_all(".pa-detail del.pa-diff-del", "ns => ns.map(n => n.textContent).join(' ')")
    assert set(removed.split()) == set(baseline.split()) - set(a.spans[top].ablated_output.split())

    # click selects (and sticks: hovering elsewhere no longer changes the detail)
    other = (top + 1) % len(a.spans)
    locator.nth(other).click()
    page.page.mouse.move(0, 0)
    locator.nth(top).hover()
    d = page.detail()
    assert d["head"].startswith(f"span {other} ·") and d["answer"] == a.spans[other].ablated_output
    assert [s["selected"] for s in page.spans()] == [i == other for i in range(len(a.spans))]
    locator.nth(other).click()  # a second click deselects
    assert not any(s["selected"] for s in page.spans())

    # keyboard: spans are focusable; Enter selects the focused one, Space too
    assert all(n == "0" for n in page.page.eval_on_selector_all("#root .pa-span", "ns => ns.map(n => n.getAttribute('tabindex'))"))
    locator.nth(top).focus()
    page.page.keyboard.press("Enter")
    d = page.detail()
    assert d["head"].startswith(f"span {top} · score {w.scores[top]:.3f}")
    assert d["answer"] == a.spans[top].ablated_output
    assert [s["selected"] for s in page.spans()] == [i == top for i in range(len(a.spans))]
    assert page.page.evaluate("document.activeElement.dataset.index") == str(top)
    page.page.keyboard.press("Tab")  # next focusable span
    page.page.keyboard.press(" ")
    nxt = int(page.page.evaluate("document.activeElement.dataset.index"))
    assert page.detail()["head"].startswith(f"span {nxt} ·")

    # the ranking lists the top spans, best first
    ranks = page.page.eval_on_selector_all(".pa-rank-score", "ns => ns.map(n => n.textContent)")
    assert ranks == [f"{s.score:.3f}" for s in a.top(5)]

    # status line, progress bar and baseline
    assert page.page.inner_text(".pa-badge") == "finished"
    assert page.page.inner_text(".pa-baseline") == baseline
    assert page.page.get_attribute(".pa-bar", "aria-valuenow") == str(len(a.record.evaluations))
    assert page.page.is_hidden(".pa-stop")

    # untrusted text stays text
    body = page.page.inner_text("body")
    assert SCRIPT in body and IMG in body
    assert page.page.evaluate("typeof window.__pwned") == "undefined"
    assert page.page.evaluate("document.querySelectorAll('#root script, #root img').length") == 0
    assert page.errors == []


def test_unmount_removes_listeners_and_stop_button_sets_the_trait(page, finished):
    _, w = finished
    running = view_state(w)
    running["header"] = {**running["header"], "status": "running", "can_stop": True}
    page.mount(running)
    assert page.page.evaluate("window.__model.listenerCount()") > 0
    assert page.page.is_visible(".pa-stop")
    page.page.click(".pa-stop")
    assert page.page.evaluate("window.__model.get('stop_requested')") is True
    saved = page.page.evaluate("window.__model.saved")
    assert len(saved) == 1 and saved[0]["stop_requested"] is True
    assert page.page.is_disabled(".pa-stop")
    page.page.evaluate("window.__cleanup()")
    page.page.evaluate("window.__cleanup = null")
    assert page.page.evaluate("window.__model.listenerCount()") == 0
    assert page.errors == []


# --- live updates -----------------------------------------------------------------------------------


class _Recorder:
    """Every update a Python widget sends over its comm, in order."""

    def __init__(self):
        self.updates: list[dict] = []

    def install(self, monkeypatch):
        import comm
        from comm.base_comm import BaseComm

        updates = self.updates

        class RecordingComm(BaseComm):
            def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
                if msg_type == "comm_msg" and data and data.get("method") == "update":
                    updates.append({"comm_id": self.comm_id, "state": json.loads(json.dumps(data["state"]))})

        monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))


class _ExpectedView:
    """What widget.js should show, derived from views/scale.py's rules: the last checkpoint,
    then every delta since, in order; a delta's score is judged against the noise floor
    until the next estimate, and every colour is relative to the scale's top Python sent."""

    CHECKPOINT = ("scores", "heat", "muted", "ranking", "outputs")  # traits whose change reloads the view

    def __init__(self):
        self.traits: dict = {}  # a sync carries only the traits that changed: the model keeps the rest
        self.scores: list = []
        self.resolved: list = []
        self.significant: list = []
        self.live: list = []
        self.checkpoint = False

    def apply(self, changes: dict) -> None:
        self.traits.update(changes)
        delta = self.traits.get("delta") or {}
        self.checkpoint = any(k in changes for k in self.CHECKPOINT) or changes.get("delta") == {}
        if self.checkpoint:  # a checkpoint replaces everything, then the current delta applies
            self.scores = list(self.traits["scores"])
            self.resolved = list(self.traits["resolved"])
            self.significant = list(self.traits["significant"])
            self.live = [False] * len(self.scores)
        elif "delta" not in changes:
            return
        for i, s, resolved, _eval_id, *_drawn in delta.get("scores") or []:
            self.scores[i], self.resolved[i], self.live[i] = s, resolved, True

    @property
    def floor(self):
        return (self.traits.get("header") or {}).get("noise_floor")

    @property
    def top(self):
        return self.traits["scale"]["top"]

    def paints(self) -> list[tuple[str, bool]]:
        shown = [s for s in self.scores if s is not None]
        assert self.top >= max([0.0, *shown]), "a colour above the scale's top"
        if self.checkpoint and not any(self.live):
            assert abs(self.top - scale_top(shown)) <= 1e-6, "a checkpoint's scale is the run's own"
        return [
            paint(s, live_significant(s, r, self.floor) if live else sig, self.top)
            for s, r, sig, live in zip(self.scores, self.resolved, self.significant, self.live, strict=True)
        ]


@pytest.mark.parametrize("method", ["loo", "hierarchical"])
def test_live_updates_replayed_from_real_comm_messages(page, monkeypatch, tmp_path, method):
    rec = _Recorder()
    rec.install(monkeypatch)
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)  # a delta per event
    w = AttributionWidget()
    mine = w.comm.comm_id
    rec.updates.clear()
    a = prompt_attr.attribute(LONG_PROMPT, backend=FakeBackend(), runs_dir=tmp_path / "runs", method=method, cache=False, on_event=w)
    assert a.status == "finished"
    updates = [u["state"] for u in rec.updates if u["comm_id"] == mine]
    n = len(a.spans)
    assert n > 10
    if method == "hierarchical":
        assert max(e.round for e in a.record.evaluations) >= 1, "the prompt must need a refinement pass"
    assert sum(1 for u in updates if (u.get("delta") or {}).get("scores")) >= 3

    page.mount(empty_state())
    assert page.spans() == []
    assert page.page.inner_text(".pa-badge") == "running"

    expected = _ExpectedView()
    coloured_before = 0
    saw_delta_recolour = False
    for step, changes in enumerate(updates):
        before = page.spans()
        page.apply(changes)
        expected.apply(changes)
        now = page.spans()
        if step == 0:  # the RunStarted checkpoint: the whole prompt, nothing scored yet
            assert "spans" in changes and len(now) == n
            assert all(s["pending"] and s["inline"] == "" for s in now)
            assert page.page.inner_text("#root .pa-prompt") == LONG_PROMPT
            continue
        assert_colours(now, expected.paints(), expected.scores)
        coloured = sum(s is not None for s in expected.scores)
        assert coloured >= coloured_before, "a span lost its colour"
        coloured_before = coloured
        is_delta = "scores" not in changes and (changes.get("delta") or {}).get("scores")
        if is_delta and [s["inline"] for s in now] != [s["inline"] for s in before]:
            saw_delta_recolour = True
    assert saw_delta_recolour, "no delta message ever changed a colour"
    assert page.page.inner_text(".pa-badge") == "finished"

    # the replayed view ends exactly where a view of the saved run starts
    final = AttributionWidget.from_attribution(prompt_attr.load_run(a.run_id, runs_dir=tmp_path / "runs"))
    assert_colours(page.spans(), expected_paint(final.record), final.scores)
    assert page.errors == []


def test_answers_stay_visible_through_pass_checkpoints(page, monkeypatch, tmp_path):
    """After a pass's checkpoint every scored span still shows its ablated answer."""
    rec = _Recorder()
    rec.install(monkeypatch)
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)
    w = AttributionWidget()
    mine = w.comm.comm_id
    rec.updates.clear()
    a = prompt_attr.attribute(LONG_PROMPT, backend=FakeBackend(), runs_dir=tmp_path / "runs", cache=False, on_event=w)
    assert max(e.round for e in a.record.evaluations) >= 1
    updates = [u["state"] for u in rec.updates if u["comm_id"] == mine]
    by_id = {str(e.id): e.output for e in a.record.evaluations}

    page.mount(empty_state())
    checked = 0
    for changes in updates:
        page.apply(changes)
        if "scores" not in changes or changes.get("header", {}).get("status", "running") != "running":
            continue
        if all(s is None for s in changes["scores"]):
            continue  # the RunStarted checkpoint
        # a mid-run checkpoint (end of a pass): every scored span's answer must be on screen
        evals = page.page.evaluate("window.__model.get('evals')")
        delta_evals = {i: e for i, _s, _r, e, *_drawn in (page.page.evaluate("window.__model.get('delta')") or {}).get("scores", [])}
        for i, node in enumerate(page.spans()):
            if node["pending"]:
                continue
            page.page.locator("#root .pa-span").nth(i).dispatch_event("mouseenter")
            d = page.detail()
            eval_id = delta_evals.get(i, evals[i])
            assert d["answer"] == by_id[str(eval_id)], (i, eval_id, d)
            checked += 1
    assert checked > 0, "no mid-run checkpoint was replayed"
    assert page.errors == []


# --- the static heat-map ----------------------------------------------------------------------------


def test_static_heatmap_html_is_inert(page, finished):
    a, _ = finished
    html = heatmap_html(a.record)
    page.page.set_content(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{html}</body></html>")
    body = page.page.inner_text("body")
    assert SCRIPT in body and IMG in body
    assert page.page.evaluate("typeof window.__pwned") == "undefined"
    assert page.page.evaluate("document.querySelectorAll('script, img').length") == 0
    n = page.page.evaluate("document.querySelectorAll('.pa-span').length")
    assert n == len(a.spans)
    titles = page.page.eval_on_selector_all(".pa-span", "ns => ns.map(n => n.title)")
    said = {s.index: verdict(s) for s in a.record.attribution}
    assert titles == [f"span {s.index}: score {s.score:.3f}" + (f" ({said[s.index]})" if said[s.index] else "")
                      for s in a.spans]
    assert "noise floor" in page.page.inner_text(".pa-notes")
    colours = page.page.eval_on_selector_all(".pa-span", "ns => ns.map(n => getComputedStyle(n).backgroundColor)")
    alphas = [rgba(c)[3] for c in colours]
    top = a.top(1)[0].index
    assert alphas[top] == max(alphas) and alphas.count(max(alphas)) == 1
    assert page.page.evaluate("document.querySelector('pre').textContent") == a.record.prompt
    assert page.errors == []


# --- screenshots and readability -------------------------------------------------------------------

# WCAG contrast of an element's text against what is really behind it: colours
# are normalised through a canvas (so color-mix() and rgba() both work) and
# translucent backgrounds are composited from the page down.
CONTRAST_JS = """(selectors) => {
  const ctx = Object.assign(document.createElement('canvas'), { width: 1, height: 1 }).getContext('2d', { willReadFrequently: true });
  const parse = (css) => { ctx.clearRect(0, 0, 1, 1); ctx.fillStyle = '#000'; ctx.fillStyle = css; ctx.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data; return [r, g, b, a / 255]; };
  const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3]));
  const backdrop = (node) => {
    const layers = [];
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) layers.push(parse(getComputedStyle(n).backgroundColor));
    return layers.reverse().reduce((under, layer) => over(layer, under), [255, 255, 255]);
  };
  const lum = (rgb) => { const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const out = {};
  for (const sel of selectors) {
    const node = document.querySelector(sel);
    if (!node) { out[sel] = null; continue; }
    const bg = backdrop(node), fg = over(parse(getComputedStyle(node).color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    out[sel] = (hi + 0.05) / (lo + 0.05);
  }
  return out;
}"""

TEXT = [".pa-title", ".pa-stats", ".pa-legend-label", ".pa-baseline", ".pa-detail-head", ".pa-detail-span",
        ".pa-h", ".pa-h2", ".pa-rank-text", ".pa-rank-score", ".pa-badge", ".pa-diff-same", ".pa-diff-del"]


def _theme(page, theme):
    if theme == "dark":
        page.page.evaluate("document.body.classList.add('dark')")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshot_and_contrast(page, finished, theme):
    a, w = finished
    _theme(page, theme)
    page.mount(view_state(w))
    top = a.top(1)[0].index
    page.page.locator("#root .pa-span").nth(top).click()
    page.page.mouse.move(0, 0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"widget-{theme}.png"
    page.page.locator("#wrap").screenshot(path=str(target))
    assert target.stat().st_size > 10_000

    # the theme variables reach the widget
    bg = page.page.evaluate("getComputedStyle(document.querySelector('.prompt-attr')).backgroundColor")
    assert bg == ("rgb(17, 17, 17)" if theme == "dark" else "rgb(255, 255, 255)")

    contrast = page.page.evaluate(CONTRAST_JS, TEXT)
    print(theme, {k: round(v, 2) for k, v in contrast.items()})
    for selector, ratio in contrast.items():
        assert ratio is not None and ratio >= 4.5, (theme, selector, ratio)

    # text on the heat colours: every span stays legible. The strongest shade
    # (alpha 0.8, shared with render.py) reaches about 4.2:1 on white; 4.0 is
    # the floor this test holds it to.
    spans = [f"#root .pa-span[data-index='{i}']" for i in range(len(a.spans))]
    on_heat = page.page.evaluate(CONTRAST_JS, spans)
    print(theme, "spans", [round(v, 2) for v in on_heat.values()])
    assert min(on_heat.values()) >= 4.0, (theme, on_heat)
    assert page.errors == []


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("status", ["running", "finished", "aborted", "failed"])
def test_status_badge_is_readable(page, finished, theme, status):
    _, w = finished
    _theme(page, theme)
    state = view_state(w)
    state["header"] = {**state["header"], "status": status, "reason": "budget reached" if status == "aborted" else None}
    page.mount(state)
    assert page.page.inner_text(".pa-badge") == status
    ratios = page.page.evaluate(CONTRAST_JS, [".pa-badge", ".pa-reason"] if status == "aborted" else [".pa-badge"])
    for selector, ratio in ratios.items():
        assert ratio >= 4.5, (theme, status, selector, ratio)
    # the four states are told apart by colour as well as by word
    colour = page.page.evaluate("getComputedStyle(document.querySelector('.pa-badge')).color")
    fg = page.page.evaluate("getComputedStyle(document.querySelector('.prompt-attr')).color")
    assert colour != fg
    assert page.errors == []


def test_layout_holds_in_a_narrow_output_area_with_long_tokens(browser, site, tmp_path):
    """A side-panel-wide output and unbroken 200-character tokens: nothing spills sideways."""
    url = "https://example.org/" + "a" * 200
    prompt = f"Read The Docs At {url} first.\n\nAlways Answer Briefly.\n\n{'x' * 180}\n\nit is calm."
    a = prompt_attr.attribute(prompt, backend=FakeBackend(), runs_dir=tmp_path / "runs", method="loo", cache=False)
    p = Page(browser, site, width=420, height=700)
    try:
        p.mount(view_state(AttributionWidget.from_attribution(a)))
        p.page.locator("#root .pa-span").nth(0).click()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        p.page.locator("#wrap").screenshot(path=str(SCREENSHOTS / "widget-narrow.png"))
        for i in range(len(a.spans)):
            if i:
                p.page.locator("#root .pa-span").nth(i).click()
            overflow = p.page.evaluate(
                """() => [...document.querySelectorAll('.prompt-attr, .prompt-attr *')]
                     .filter((n) => n.scrollWidth > n.clientWidth + 1 && getComputedStyle(n).overflowX !== 'auto')
                     .map((n) => n.className || n.tagName)"""
            )
            assert overflow == [], (i, overflow)
            assert p.page.evaluate("document.documentElement.scrollWidth") <= 420
        assert p.errors == []
    finally:
        p.context.close()


# --- uncertainty: the surrogate's errors, the noise floor, the notes --------------------------------

TWICE = (
    "Our office is in the city.\n"
    "The team meets in Lyon every week.\n"
    "We like coffee.\n"
    "The headquarters are in Lyon too.\n"
    "Lunch is at noon."
)


def test_surrogate_view_shows_uncertainty_noise_and_notes(page, tmp_path):
    a = prompt_attr.attribute(TWICE, backend=FakeBackend(logprobs=True), runs_dir=tmp_path / "runs", segment="line",
                              method="surrogate", target="Lyon", cache=False)
    w = AttributionWidget.from_attribution(a)
    assert w.significant == [s.significant for s in a.spans] and w.stderr[1] is not None
    page.mount(view_state(w))
    notes = page.page.inner_text("#root .pa-notes")
    assert "estimator: surrogate (LASSO on" in notes and "noise floor 0.100" in notes
    assert "of the target 'Lyon'" in notes and "check: deleting the top 2 together" in notes
    assert "nats/token" in page.page.inner_text("#root .pa-legend")
    # both copies of the fact are the top two, each with its standard error; the rest is noise
    top = a.top(2)
    ranks = page.page.eval_on_selector_all(".pa-rank-score", "ns => ns.map(n => n.textContent)")
    assert ranks[:2] == [f"{s.score:.3f} ± {s.stderr:.3f}" for s in top]
    assert {s.index for s in top} == {1, 3}
    for node, span in zip(page.spans(), a.spans, strict=True):
        coloured = rgba(node["computed"])[3] > 0
        assert coloured == bool(span.significant), node
        assert f"± {span.stderr:.3f}" in node["aria"]
    # no answer was regenerated: the detail says what the score means instead of an empty diff
    page.page.locator("#root .pa-span").nth(1).click()
    d = page.detail()
    assert d["head"].startswith(f"span 1 · score {a.spans[1].score:.3f} ± {a.spans[1].stderr:.3f}")
    assert "Not regenerated" in d["diffText"] and '"Lyon"' in d["diffText"]
    page.page.locator("#root .pa-span").nth(2).click()
    assert "below the noise floor" in page.detail()["head"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.page.locator("#wrap").screenshot(path=str(SCREENSHOTS / "widget-surrogate.png"))
    assert page.errors == []


def test_a_run_that_measured_nothing_shows_an_empty_bar_and_says_so(page, finished):
    """A --target not in the answer ends the run before its first evaluation: the bar was full at
    "0 / 0 evaluations"; it is empty, the stats say "no evaluations" and the reason shows."""
    _, w = finished
    state = view_state(w)
    state["header"] = {**state["header"], "status": "failed", "reason": "the target 'Zanzibar' is not in the answer"}
    state["progress"] = {**state["progress"], "done": 0, "planned": 0}
    page.mount(state)
    width = page.page.evaluate("getComputedStyle(document.querySelector('#root .pa-bar-fill')).width")
    assert width == "0px"
    stats = page.page.inner_text("#root .pa-stats")
    assert stats.startswith("no evaluations") and "0 / 0" not in stats
    assert "Zanzibar" in page.page.inner_text("#root .pa-reason")
    assert page.errors == []


def test_elapsed_counts_from_when_the_view_appeared_and_the_phase_shows(page, finished):
    """The model's loading and the baseline send no progress: elapsed stayed at 0.0 s for the
    first seconds of a local run. It counts on in the view while the run is live."""
    _, w = finished
    state = view_state(w)
    state["header"] = {**state["header"], "status": "running", "reason": None}
    state["progress"] = {"phase": "baseline"}
    page.mount(state)
    page.page.wait_for_timeout(2300)
    stats = page.page.inner_text("#root .pa-stats")
    assert stats.startswith("baseline · ")
    seconds = float(re.search(r"([\d.]+) s elapsed", stats)[1])
    assert 1.5 <= seconds <= 4.0, stats
    assert page.errors == []


def test_the_live_view_hides_its_saved_view_while_it_is_drawn(page, finished):
    """js/common.js hideSavedView: the saved view paired with this live view (its view_key) is
    hidden from when the view is drawn until it is removed; another widget's saved view is not."""
    _, w = finished
    other = AttributionWidget()
    page.page.evaluate(
        """([mine, other]) => { for (const [id, key] of [["mine", mine], ["other", other]]) {
             const d = document.createElement("div"); d.id = id; d.className = "prompt-attr-saved";
             d.dataset.promptAttrView = key; d.textContent = "saved view"; document.body.appendChild(d); } }""",
        [w.view_key, other.view_key],
    )
    shown = "(id) => getComputedStyle(document.getElementById(id)).display !== 'none'"
    assert page.page.evaluate(shown, "mine") and page.page.evaluate(shown, "other")
    page.mount(view_state(w))
    assert not page.page.evaluate(shown, "mine") and page.page.evaluate(shown, "other")
    page.page.evaluate("() => window.__cleanup()")
    assert page.page.evaluate(shown, "mine")  # the live view is gone: its saved view shows again
    assert page.errors == []


# --- the behavioural check --------------------------------------------------------------------------


class ProbabilityOnly(FakeBackend):
    """Deleting the code changes the answer; deleting "Please answer briefly." only makes the
    same answer less likely (every token 1.5 nats), so it moves the probability only."""

    async def complete(self, messages, params):
        self.calls += 1
        said = "The code is Zorblax." if "Zorblax" in messages[-1]["content"] else "I do not know."
        return Completion(said, prompt_tokens=20, completion_tokens=5, finish_reason="stop")

    async def logprob(self, messages, continuation):
        scored = await super().logprob(messages, continuation)
        if "Please answer briefly." not in messages[-1]["content"]:
            scored.logprobs = [lp - 1.5 for lp in scored.logprobs]
        return scored


def test_the_widget_says_which_spans_change_the_answer_and_which_move_its_probability_only(page, tmp_path):
    prompt = "The code is Zorblax. Please answer briefly. It is late. What is the code?"
    a = prompt_attr.attribute(prompt, backend=ProbabilityOnly(logprobs=True), runs_dir=tmp_path, method="loo",
                              target="Zorblax", cache=False)
    by_index = {s.index: s for s in a.record.attribution}
    assert by_index[0].behaviour == "changes" and by_index[1].behaviour == "probability"
    w = AttributionWidget.from_attribution(a)
    page.mount(view_state(w))
    spans = page.spans()
    assert "(changes the answer: the target is gone)" in spans[0]["aria"]
    assert "(moves its probability only" in spans[1]["aria"] and rgba(spans[1]["computed"])[3] == 0
    assert rgba(spans[0]["computed"])[3] > 0  # the cause is coloured, the probability-only span is not
    ranking = page.page.inner_text(".pa-ranking") if page.page.locator(".pa-ranking").count() else \
        " ".join(page.page.eval_on_selector_all(".pa-rank", "ns => ns.map(n => n.textContent)"))
    assert "(changes the answer)" in ranking and "(moves its probability only)" in ranking
    page.page.locator('.pa-span[data-index="1"]').click()
    assert "moves its probability only" in page.detail()["head"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.page.locator("#wrap").screenshot(path=str(SCREENSHOTS / "widget-behaviour.png"))
