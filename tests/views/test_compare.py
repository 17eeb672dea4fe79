"""Comparing two runs: span alignment, score deltas, answer diff, config and model changes."""

from __future__ import annotations

import html.parser
import json

import pytest
from support import displayed

import prompt_attr
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli
from prompt_attr_widget.stages.align import align_spans, word_diff

V1 = "It was late. The Blue Falcon landed safely. It rained all day. My cat slept."
# edited: one sentence changed, one removed, one added
V2 = "It was late. The Red Falcon landed safely. My cat slept. Zebra Crossing Ahead."

# Many capitalised words in the first sentence: deleting the one in the hostile span moves the
# fake model's answer a little, a positive score below the noise floor (0.05).
NOISY_A = "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Sigma. It was late. Omega is near."
NOISY_B = "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Sigma. It was late. <img src=x onerror=alert(1)> Omega here."


def run(runs_dir, prompt, **options):
    return prompt_attr.attribute(prompt, backend=FakeBackend(), runs_dir=runs_dir, method="loo", **options)


def test_an_edit_is_aligned_span_by_span_with_score_deltas(runs_dir):
    a, b = run(runs_dir, V1), run(runs_dir, V2)
    c = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir)
    by_status = {}
    for r in c.spans:
        by_status.setdefault(r.status, []).append(r)
    assert [r.text_a for r in by_status["same"]] == ["It was late.", "My cat slept."]
    [changed] = by_status["changed"]
    assert (changed.text_a, changed.text_b) == ("The Blue Falcon landed safely.", "The Red Falcon landed safely.")
    assert [r.text_a for r in by_status["removed"]] == ["It rained all day."]
    assert [r.text_b for r in by_status["added"]] == ["Zebra Crossing Ahead."]
    scores_a = {s.index: s.score for s in a.spans}
    scores_b = {s.index: s.score for s in b.spans}
    for r in c.spans:
        if r.index_a is not None and r.index_b is not None:
            assert r.delta == pytest.approx(scores_b[r.index_b] - scores_a[r.index_a])
        else:
            assert r.delta is None
    assert not c.same_prompt and not c.same_answer
    assert ("insert", "Red") in c.baseline_diff and ("delete", "Blue") in c.baseline_diff
    assert c.moved(1)[0].delta is not None
    assert c.calls == (a.record.spend.calls, b.record.spend.calls)


def test_the_same_prompt_twice_is_the_same_with_zero_deltas(runs_dir):
    a, b = run(runs_dir, V1), run(runs_dir, V1, cache=False)
    c = prompt_attr.compare(a.run_id, "latest", runs_dir=runs_dir)
    assert c.run_b == b.run_id and c.same_prompt and c.same_answer
    assert {r.status for r in c.spans} == {"same"} and all(r.delta == 0 for r in c.spans)
    assert c.config_changes == {"cache": (True, False)} or c.config_changes == {}


def test_config_and_model_changes_are_listed_and_other_units_get_no_deltas(runs_dir):
    a = run(runs_dir, V1)
    b = prompt_attr.attribute(V1, backend=FakeBackend(logprobs=True), runs_dir=runs_dir, method="surrogate", masks=8)
    c = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir)
    assert c.config_changes["method"] == ("loo", "surrogate")
    assert "concurrency" not in c.config_changes  # how a run ran is not a difference in what it computed
    assert not c.comparable_scores and all(r.delta is None for r in c.spans)
    assert "not comparable" in str(c)


def test_renderings_escape_hostile_text(runs_dir):
    hostile = "It was late. <script>window.__pwned=1</script> Alpha. \x1b[31mRed\x1b[0m Beta."
    a, b = run(runs_dir, V1), run(runs_dir, hostile)
    c = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir)
    page = c._repr_html_()
    tags = []

    class Tags(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append(tag)

    Tags().feed(page)
    assert "script" not in tags and "&lt;script&gt;" in page
    text = str(c)
    assert "\x1b" not in text and "<script>" in text  # shown as text, with no escape sequence


def test_cli_compare(runs_dir, capsys):
    a, b = run(runs_dir, V1), run(runs_dir, V2)
    assert cli(["compare", a.run_id, b.run_id, "--runs-dir", str(runs_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run_a"] == a.run_id and data["run_b"] == b.run_id
    assert {r["status"] for r in data["spans"]} == {"same", "changed", "added", "removed"}
    assert cli(["compare", a.run_id, "latest", "--runs-dir", str(runs_dir)]) == 0
    assert "answers differ" in capsys.readouterr().out
    assert cli(["compare", a.run_id, "../etc", "--runs-dir", str(runs_dir)]) == 2


def test_magic_compare(runs_dir):
    from IPython.core.error import UsageError as IPythonUsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "prompt_attr")
    a, b = run(runs_dir, V1), run(runs_dir, V2)
    w = shell.run_line_magic("attribute_compare", f"{a.run_id} {b.run_id} {runs_dir}")
    assert w.header["run_a"] == a.run_id and len(w.rows) == len(w.comparison.spans)
    live, saved = displayed(w)
    assert b.run_id in saved["text/plain"] and "text/html" not in live
    assert "<table>" in saved["text/html"] and f'data-prompt-attr-view="{w.view_key}"' in saved["text/html"]
    with pytest.raises(IPythonUsageError, match="usage"):
        shell.run_line_magic("attribute_compare", a.run_id)


def test_word_diff_and_alignment_edges():
    assert word_diff("a b c", "a x c") == [("equal", "a"), ("delete", "b"), ("insert", "x"), ("equal", "c")]
    assert word_diff("", "new words") == [("insert", "new words")]
    assert word_diff("same", "same") == [("equal", "same")]
    # with spacing, the pieces keep their whitespace: the equal and insert ones join to B exactly
    a, b = "Bonjour Paris est\nbelle", "  Bonjour est\n\nbelle !"
    spaced = word_diff(a, b, spacing=True)
    assert spaced == [("equal", "  Bonjour "), ("delete", "Paris "), ("equal", "est\n\nbelle "), ("insert", "!")]
    assert [op for op, _ in spaced] == [op for op, _ in word_diff(a, b)]  # the same diff
    for x, y in [(a, b), ("x", "   "), ("a b", ""), ("", ""), ("a  b\tc", "a  b\tc"), ("", " new\nwords ")]:
        assert "".join(t for op, t in word_diff(x, y, spacing=True) if op != "delete") == y


def test_alignment_of_runs_with_no_scores(runs_dir):
    a, b = run(runs_dir, V1), run(runs_dir, V2)
    a.record.attribution.clear()  # a run stopped before any estimate
    rows = align_spans(a.record, b.record, comparable=True)
    assert all(r.delta is None for r in rows) and len(rows) >= len(b.spans)


def test_both_runs_share_one_scale_and_noise_stays_uncoloured_in_every_view(runs_dir):
    import re

    from prompt_attr_widget.views.scale import heat_css, level, scale_top

    a, b = run(runs_dir, NOISY_A), run(runs_dir, NOISY_B)
    c = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir)
    sig = {"a": {s.index: s.significant for s in a.spans}, "b": {s.index: s.significant for s in b.spans}}
    assert all(r.significant_a == (sig["a"][r.index_a] if r.index_a is not None else None) and
               r.significant_b == (sig["b"][r.index_b] if r.index_b is not None else None) for r in c.spans)
    top = scale_top([*(s.score for s in a.spans), *(s.score for s in b.spans)])
    assert c.scale_tops() == (top, top)
    want = [((heat_css(level(r.score_a, r.significant_a, top)), r.significant_a is False),
             (heat_css(level(r.score_b, r.significant_b, top)), r.significant_b is False)) for r in c.spans]
    assert c.paints() == want
    assert any(r.significant_b is False and r.score_b > 0 for r in c.spans)
    # the widget sends exactly these, and the static HTML paints exactly these
    rows = c.widget().rows
    assert [((r["heat_a"], r["muted_a"]), (r["heat_b"], r["muted_b"])) for r in rows] == want
    cells = re.findall(r'<td>(?:<span class="([^"]*)" style="([^"]*)")?', c._repr_html_())
    drawn = [(cls, (re.search(r"background:([^;]+)", style) or [None, ""])[1]) for cls, style in cells if cls]
    sides = [p for r, pair in zip(c.spans, want, strict=True) for p, text in zip(pair, (r.text_a, r.text_b), strict=True)
             if text is not None]
    assert [css for _, css in drawn] == [css for css, _ in sides]
    assert [cls.endswith("pa-noise") for cls, _ in drawn] == [muted for _, muted in sides]
    assert "one scale for both runs" in c._repr_html_() and "below the noise floor (A 0.050, B 0.050)" in c._repr_html_()


def test_runs_in_different_units_are_each_on_their_own_scale(runs_dir):
    a = run(runs_dir, V1)
    b = prompt_attr.attribute(V1, backend=FakeBackend(logprobs=True), runs_dir=runs_dir, method="surrogate", masks=8)
    c = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir)
    from prompt_attr_widget.views.scale import scale_max

    assert c.scale_tops() == (scale_max(a.record), scale_max(b.record))
    assert "each run on its own scale" in c.legend()["note"]


# --- re-run: a determinism check -------------------------------------------------------------------


class Drifting(FakeBackend):
    """A model whose answers change after `after` calls (a silent model update)."""

    def __init__(self, after: int, **kw):
        super().__init__(**kw)
        self.after = after

    async def complete(self, messages, params):
        c = await super().complete(messages, params)
        if self.calls > self.after:
            c.text += " Drifted"
        return c


def test_a_rerun_of_a_deterministic_model_reports_matching_outputs(runs_dir):
    first = run(runs_dir, V1)
    backend = FakeBackend()
    again = prompt_attr.attribute(rerun=first.run_id, backend=backend, runs_dir=runs_dir)
    assert again.run_id != first.run_id and again.record.rerun_of == first.run_id
    assert backend.calls > 0, "a re-run asks the model again (the cache is off by default)"
    rep = again.reproduction
    assert rep.deterministic and rep.baseline_same and rep.matched == len(first.record.evaluations)
    assert "outputs match" in str(rep)
    assert prompt_attr.load_run(again.run_id, runs_dir=runs_dir).record.rerun_of == first.run_id


def test_a_rerun_reports_answers_that_changed(runs_dir):
    first = run(runs_dir, V1)
    again = prompt_attr.attribute(rerun=first.run_id, backend=Drifting(after=3), runs_dir=runs_dir)
    rep = again.reproduction
    assert not rep.deterministic and rep.baseline_same and rep.differed
    assert "DIFFER" in str(rep)


def test_a_rerun_keeps_what_the_run_computes(runs_dir):
    first = run(runs_dir, V1)
    with pytest.raises(prompt_attr.UsageError, match="method"):
        prompt_attr.attribute(rerun=first.run_id, backend=FakeBackend(), runs_dir=runs_dir, method="surrogate")
    with pytest.raises(prompt_attr.UsageError, match="not both"):
        prompt_attr.attribute(rerun=first.run_id, resume=first.run_id, runs_dir=runs_dir)


def test_cli_rerun(runs_dir, capsys):
    first = prompt_attr.attribute(V1, model="fake", runs_dir=runs_dir, method="loo")
    assert cli(["rerun", first.run_id, "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert f"of {first.run_id}: outputs match" in out
    assert len(prompt_attr.list_runs(runs_dir)) == 2


# --- A/B of prompt variants ---------------------------------------------------------------------------


def test_ab_attributes_both_variants_under_identical_settings(runs_dir):
    result = prompt_attr.ab(V1, V2, backend=FakeBackend(), runs_dir=runs_dir, method="loo", label="exp")
    a, b = result.a.record, result.b.record
    assert {k: v for k, v in a.config.items() if k != "label"} == {k: v for k, v in b.config.items() if k != "label"}
    assert (a.config["label"], b.config["label"]) == ("exp/A", "exp/B")
    edits = result.edits()
    assert {r.status for r in edits} == {"changed", "added", "removed"}
    assert edits[0].text_b == "The Red Falcon landed safely."  # the answer leans most on the edited span
    text = str(result)
    assert "the answer changed" in text and "{+Red+}" in text and "[-Blue-]" in text
    assert [r.run_id for r in prompt_attr.list_runs(runs_dir, label="exp/B")] == [result.b.run_id]


def test_cli_ab(runs_dir, tmp_path, capsys):
    fa, fb = tmp_path / "a.txt", tmp_path / "b.txt"
    fa.write_text(V1, "utf-8")
    fb.write_text(V2, "utf-8")
    assert cli(["ab", str(fa), str(fb), "--model", "fake", "--method", "loo", "--runs-dir", str(runs_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in data["spans"]} >= {"changed", "added", "removed"}
    assert len(prompt_attr.list_runs(runs_dir)) == 2


# --- the side-by-side widget in a real browser ---------------------------------------------------------


@pytest.mark.browser
def test_compare_widget_in_chromium(page, runs_dir):
    from browser_harness import SCREENSHOTS, view_state

    hostile = V2.replace("Zebra Crossing Ahead.", "<img src=x onerror=window.__pwned=1> Zebra.")
    a, b = run(runs_dir, V1), run(runs_dir, hostile)
    widget = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir).widget()
    dialogs = []
    page.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.mount_compare(view_state(widget))
    rows = page.page.eval_on_selector_all(
        "#root .pa-cmp-row", "rs => rs.map(r => ({cls: r.className, cells: [...r.cells].map(c => c.textContent)}))"
    )
    assert [r["cls"].split()[-1] for r in rows] == [f"pa-cmp-{r.status}" for r in widget.comparison.spans]
    changed = next(r for r in rows if r["cls"].endswith("pa-cmp-changed"))
    assert changed["cells"][1:4:2] == ["The Blue Falcon landed safely.", "The Red Falcon landed safely."]
    added = next(r for r in rows if r["cls"].endswith("pa-cmp-added"))
    assert added["cells"][3].startswith("<img src=x onerror=")  # shown as text
    assert page.page.evaluate("window.__pwned") is None and not dialogs
    assert page.page.locator("#root img").count() == 0
    assert page.page.locator("#root ins.pa-diff-add").first.text_content()
    assert not page.errors, page.errors
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.page.locator("#wrap").screenshot(path=str(SCREENSHOTS / "widget-compare.png"))


CELL_SPANS_JS = """() => [...document.querySelectorAll('#root .pa-cmp-row')].map((r) => [1, 3].map((k) => {
  const s = r.cells[k].querySelector('.pa-span');
  return s && { text: s.textContent, inline: s.style.backgroundColor, computed: getComputedStyle(s).backgroundColor,
                muted: s.classList.contains('pa-muted'), title: s.title };
}))"""


def _alpha(css: str) -> float:
    parts = css[css.index("(") + 1 : -1].split(",")
    return float(parts[3]) if len(parts) == 4 else 1.0


@pytest.mark.browser
def test_compare_widget_leaves_a_span_below_the_noise_floor_uncoloured(page, runs_dir):
    from browser_harness import FOREIGN_JS, SCREENSHOTS, view_state

    a, b = run(runs_dir, NOISY_A), run(runs_dir, NOISY_B)
    c = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir)
    [noisy] = [r for r in c.spans if r.text_b and "<img" in r.text_b]
    assert noisy.score_b > 0 and noisy.significant_b is False, "the test needs a positive score below the floor"
    assert noisy.score_b <= b.record.noise.floor
    signal = next(r for r in c.spans if r.status == "same" and r.significant_a and r.significant_b)
    widget = c.widget()
    dialogs = []
    page.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.mount_compare(view_state(widget))
    page.page.wait_for_timeout(300)  # time for an onerror to fire
    cells = page.page.evaluate(CELL_SPANS_JS)
    assert len(cells) == len(c.spans)
    by_row = dict(zip([id(r) for r in c.spans], cells, strict=True))

    # the payload is text, nothing ran, nothing was planted
    found = page.page.evaluate(FOREIGN_JS, "#root")
    assert dialogs == [] and found["handlers"] == [] and page.page.locator("#root img").count() == 0
    assert set(found["tags"]) <= {"div", "span", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "ins", "del"}
    hostile = by_row[id(noisy)][1]
    assert hostile["text"] == noisy.text_b and hostile["text"].startswith("<img src=x onerror=alert(1)>")

    # below the floor: no background at all (inline or computed), greyed and labelled
    assert hostile["inline"] == "" and _alpha(hostile["computed"]) == 0, hostile
    assert hostile["muted"] and "below noise floor" in hostile["title"]
    # a significant span is coloured, on the one scale both runs share, as Python computed it
    paints = dict(zip([id(r) for r in c.spans], c.paints(), strict=True))
    for k in (0, 1):  # A's side, B's side
        node = by_row[id(signal)][k]
        assert _alpha(node["computed"]) > 0 and not node["muted"], node
        assert abs(_alpha(node["inline"]) - _alpha(paints[id(signal)][k][0])) < 0.005
    top_a, top_b = c.scale_tops()
    assert top_a == top_b == max(x for r in c.spans for x in (r.score_a, r.score_b) if x is not None)
    # every span drawn as Python decided: coloured exactly when Python sent a colour
    for r, drawn in zip(c.spans, cells, strict=True):
        for (css, muted), node in zip(paints[id(r)], drawn, strict=True):
            if node is not None:
                assert (_alpha(node["computed"]) > 0) == bool(css) and node["muted"] == muted, (r, node)
    legend = page.page.inner_text("#root .pa-legend")
    assert "one scale for both runs" in legend and "below the noise floor" in legend
    assert not page.errors, page.errors
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.page.locator("#wrap").screenshot(path=str(SCREENSHOTS / "widget-compare-noise.png"))

    # the static comparison shows the same: the span below the floor uncoloured and grey
    page.page.set_content(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{c._repr_html_()}</body></html>")
    page.page.wait_for_timeout(300)
    assert dialogs == [] and page.page.locator("img").count() == 0
    static = page.page.eval_on_selector_all(
        "td .pa-span", "ns => ns.map(n => ({text: n.textContent, bg: getComputedStyle(n).backgroundColor, "
        "noise: n.classList.contains('pa-noise')}))")
    [shown] = [s for s in static if s["text"] == noisy.text_b]
    assert _alpha(shown["bg"]) == 0 and shown["noise"]
    assert all(_alpha(s["bg"]) > 0 for s in static if s["text"] == signal.text_b)
