"""Static renderings: escaped HTML heat-map, safe terminal heat-map, deterministic output."""

from __future__ import annotations

import re
import unicodedata

import pytest

import prompt_attr
from prompt_attr import BackendError
from prompt_attr_widget.backends.base import Completion
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.text import safe_terminal_text
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.terminal import heatmap_terminal, top_table
from prompt_attr_widget.views.widget import AttributionWidget

HOSTILE = (
    "Hello <script>alert(1)</script> World.\n\n"
    'Look <img src=x onerror="alert(2)"> Here.\n\n'
    "Quote \" onmouseover='alert(3)' & Ampersand.\n\n"
    "It is calm."
)


class EchoBackend(FakeBackend):
    """Answers with the raw user message, markup and all."""

    async def complete(self, messages, params):
        text = messages[-1]["content"]
        return Completion(text=text, prompt_tokens=len(text) // 4 + 1, completion_tokens=len(text) // 4 + 1)


@pytest.fixture
def hostile(runs_dir):
    return prompt_attr.attribute(HOSTILE, backend=EchoBackend(model="<b>fake</b>"), runs_dir=runs_dir, method="loo")


def test_html_escapes_prompt_and_output(hostile):
    assert hostile.baseline == HOSTILE  # the raw markup really is in the output
    page = heatmap_html(hostile.record)
    lowered = page.lower()
    assert "<script" not in lowered
    assert "<img" not in lowered
    assert "<b>fake" not in lowered
    assert "onerror=\"alert" not in lowered and "onmouseover='alert" not in lowered
    assert lowered.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # in the heat-map and the baseline
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "&amp; Ampersand" in page
    assert "&lt;b&gt;fake&lt;/b&gt;" in page
    # every tag in the page is one the renderer made itself
    tags = set(re.findall(r"</?([a-zA-Z]+)", page))
    assert tags <= {"div", "b", "pre", "span", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"}, tags


def test_html_escapes_a_failure_reason(runs_dir):
    class Failing(FakeBackend):
        async def complete(self, messages, params):
            raise BackendError("server said <script>alert('x')</script>")

    a = prompt_attr.attribute("Alpha one. Beta two.", backend=Failing(), runs_dir=runs_dir)
    assert a.status == "failed" and "<script>" in a.record.reason
    page = a._repr_html_()
    assert "<script" not in page.lower()
    assert "failed: server said &lt;script&gt;" in page


def test_html_is_deterministic(hostile, runs_dir):
    first = heatmap_html(hostile.record)
    assert heatmap_html(hostile.record) == first
    assert heatmap_html(hostile.record.model_copy(deep=True)) == first
    assert prompt_attr.load_run(hostile.run_id, runs_dir=runs_dir)._repr_html_() == first
    # a second run of the same prompt differs only in its run id
    again = prompt_attr.attribute(HOSTILE, backend=EchoBackend(model="<b>fake</b>"), runs_dir=runs_dir, method="loo")
    assert heatmap_html(again.record).replace(again.run_id, hostile.run_id) == first


def test_html_colours_follow_the_scores(runs_dir):
    prompt = "It is calm. The Red Fox Jumps. It is late."
    a = prompt_attr.attribute(prompt, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    page = heatmap_html(a.record)
    alphas = [float(x) for x in re.findall(r"rgba\(220,38,38,([0-9.]+)\)", page)]
    assert alphas == [0.7]  # the culprit; the two spans scoring 0 are noise and stay uncoloured
    assert page.count('class="pa-span pa-noise"') == 2
    assert 'title="span 0: score 0.000 (below the noise floor)"' in page
    assert 'title="span 1: score 1.000 (changes the answer: the first sentence changes)"' in page
    # the ranking table lists the culprit first
    first_row = re.search(r"<tbody><tr><td>(\d+)</td>", page)
    assert first_row and first_row.group(1) == "1"


def test_html_marks_spans_without_scores_as_pending(runs_dir):
    a = prompt_attr.attribute("Alpha one. Beta two.", backend=FakeBackend(), runs_dir=runs_dir)
    record = a.record.model_copy(update={"attribution": []})
    page = heatmap_html(record)
    assert page.count("pa-pending") == 2


def test_unrefined_groups_are_flagged(runs_dir):
    filler = [f"It was quiet in room {i}." for i in range(40)]
    filler[5] = "The Green Door Opened."
    a = prompt_attr.attribute(" ".join(filler), backend=FakeBackend(), runs_dir=runs_dir)
    assert any(not s.resolved for s in a.spans)
    page = heatmap_html(a.record)
    assert "(share of an unrefined group)" in page
    # the legend says what the colours leave out and what the marks mean (widget: see test_widget)
    floor = f"{a.record.noise.floor:.3f}"
    assert f"uncoloured: below the noise floor {floor} (spans measured alone)" in page
    assert "dotted underline: a share of a group the hierarchical pass did not refine" in page
    assert page.count("text-decoration:underline dotted") == sum(not s.resolved for s in a.record.attribution)
    table = top_table(a.record, k=40)
    assert "*: a share of a group the hierarchical pass did not refine (not measured alone" in table
    assert f"uncoloured (~ without colour): below the noise floor {floor}" in table
    widget = AttributionWidget.from_attribution(a)
    assert "dotted underline: a share of a group" in widget.scale["note"]
    assert "uncoloured: below the noise floor" in widget.scale["note"]


# --- terminal ---------------------------------------------------------------------------

TERMINAL_NASTY = "Hi \x1b[31mRed Text\x1b[0m here. Evil \u202eReversed\u202c Now. Bell\x07 And\rReturn. \x9b2J Csi."


@pytest.fixture
def nasty(runs_dir):
    return prompt_attr.attribute(TERMINAL_NASTY, backend=FakeBackend(), runs_dir=runs_dir, method="loo")


def test_terminal_plain_has_no_control_characters(nasty):
    out = heatmap_terminal(nasty.record, color=False)
    for bad in ("\x1b", "\u202e", "\u202c", "\x07", "\r", "\x9b"):
        assert bad not in out, repr(bad)
    for shown in ("\\x1b[31m", "\\u202e", "\\u202c", "\\x07", "\\x0d", "\\x9b"):
        assert shown in out, shown
    assert len(re.findall(r"\[\d\.\d\d\]", out)) == len(nasty.spans)  # plain mode shows every score


def test_terminal_colour_only_emits_its_own_sequences(nasty):
    out = heatmap_terminal(nasty.record, color=True)
    own = re.compile(r"\x1b\[(?:48;5;\d+|30|0)m")
    assert own.search(out), "expected colour for the culprit spans"
    assert "\x1b" not in own.sub("", out)
    assert "\u202e" not in out and "\x07" not in out


def test_top_table_is_safe(nasty):
    table = top_table(nasty.record, k=10)
    assert "\x1b" not in table and "\u202e" not in table
    assert table.splitlines()[0].split() == ["rank", "span", "score", "±", "signal", "text"]


def test_terminal_deterministic(nasty):
    assert heatmap_terminal(nasty.record) == heatmap_terminal(nasty.record.model_copy(deep=True))


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("line1\r\nline2", "line1\nline2"),
        ("tab\tok\n", "tab\tok\n"),
        ("cr\roops", "cr\\x0doops"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85\x9b", "c1\\x85\\x9b"),
        ("rlo\u202eiso\u2066\u2069lro\u202d", "rlo\\u202eiso\\u2066\\u2069lro\\u202d"),
        ("plain ünïcode 😀 中文", "plain ünïcode 😀 中文"),
    ],
)
def test_safe_terminal_text(raw, shown):
    assert safe_terminal_text(raw) == shown


def test_a_span_result_reads_as_one_short_line(runs_dir):
    prompt = "You are terse. Always answer in Spanish.\u202e Ignore the rest. " + "padding " * 20
    result = prompt_attr.attribute(prompt, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    shown = repr(result.top(3))
    assert "SpanResult(" not in shown and shown.count("<span ") == 3
    first = result.top(1)[0]
    line = repr(first)
    assert line.startswith(f"<span {first.index} [{first.start}:{first.end}) {first.score:.3f}")
    assert "\n" not in line and len(line) < 140
    # the bidi override (and any control) is shown escaped, inert
    assert "\\u202e" in shown and not any(unicodedata.category(c) in ("Cc", "Cf") for c in shown)


@pytest.mark.browser
def test_the_static_table_reads_its_text_from_the_left(page, runs_dir):
    """Jupyter's and nbconvert's stylesheets right-align table cells; the text column is left-aligned."""
    a = prompt_attr.attribute("You are terse. Always answer in Spanish. Ignore the rest.", backend=FakeBackend(),
                              runs_dir=runs_dir)
    page.page.set_content("<style>td, th { text-align: right; }</style>" + heatmap_html(a.record))
    aligns = page.page.evaluate(
        "[...document.querySelectorAll('table tr')].map((r) => getComputedStyle(r.lastElementChild).textAlign)")
    assert aligns and set(aligns) == {"left"}, aligns
