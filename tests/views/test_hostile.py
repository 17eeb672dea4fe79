"""Hostile prompts (tests/data/hostile_prompts.json) through every rendering.

Each payload is one user span of a single run, and the backend repeats a
few payloads in every answer, so markup and escape sequences reach the
heat-map, the answers, the detail diff and the ranking. The static HTML must
hold only the renderer's own elements, the terminal no control sequence,
and a real Chromium must run none of it while showing all of it as text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser_harness import FOREIGN_JS, SCREENSHOTS, view_state

import prompt_attr
from prompt_attr_widget import cli
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.text import safe_terminal_text
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.terminal import heatmap_terminal, top_table
from prompt_attr_widget.views.widget import AttributionWidget

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "hostile_prompts.json").read_text("utf-8"))
PAYLOADS = {p["name"]: p["text"] for p in CORPUS}


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


SENDABLE = [text for text in PAYLOADS.values() if _encodable(text)]
REFUSED = [name for name, text in PAYLOADS.items() if not _encodable(text)]

# What heatmap_html itself emits: nothing else may appear, whatever the prompt holds.
OWN_TAGS = {"div", "b", "pre", "span", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"}
OWN_ATTRS = {"class", "style", "title", "data-index"}
# Everything a terminal could act on: C0 but tab and newline, DEL, C1, bidi controls.
TERMINAL_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
OWN_SGR = re.compile(r"\x1b\[(?:48;5;\d+|30|0)m")  # heatmap_terminal's colours
ANSWER_TAIL = "\n".join(PAYLOADS[n] for n in ("script", "img-onerror", "svg-onload", "iframe-srcdoc",
                                             "ansi-osc52-clipboard", "bidi-override", "nul", "c1-controls"))


class MarkupBackend(FakeBackend):
    """The fake model's answer (so spans score apart) followed by raw payloads (so answers are hostile)."""

    async def complete(self, messages, params):
        answer = await super().complete(messages, params)
        return dataclasses.replace(answer, text=f"{answer.text}\n{ANSWER_TAIL}")


def hostile_prompt() -> tuple[str, list[tuple[int, int]]]:
    """Every sendable payload as its own paragraph, and the span of each."""
    prompt, spans = "", []
    for text in SENDABLE:
        spans.append((len(prompt), len(prompt) + len(text)))
        prompt += text + "\n\n"
    return prompt, spans


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A finished LOO run over the corpus: one span per payload, hostile answers."""
    runs = tmp_path_factory.mktemp("runs")
    prompt, spans = hostile_prompt()
    # min_effect: the answer tail is the same in every answer, which dilutes the scores
    a = prompt_attr.attribute(prompt, backend=MarkupBackend(), runs_dir=runs, spans=spans, method="loo",
                              min_effect=0.002, cache=False)
    assert a.status == "finished" and len(a.spans) == len(SENDABLE)
    assert a.baseline.endswith(ANSWER_TAIL) and any(s.significant for s in a.spans)
    return a


def test_corpus_covers_the_attack_families():
    assert len(PAYLOADS) >= 30
    joined = "".join(PAYLOADS.values())
    for needle in ("<script", "<SCRIPT", "onerror", "<svg onload", "<iframe srcdoc", "javascript:", "<style",
                   "http-equiv", "&amp;lt;", "</textarea>", "</pre>", "-->", "${", "{{", "\x1b[", "\x1b]8;;",
                   "\x1b]52;", "\x1b]0;", "\x00", "\x85", "\u202e", "\u2066", "\u200b", "\ud800"):
        assert needle in joined, needle
    assert max(map(len, PAYLOADS.values())) > 5000


# --- static HTML --------------------------------------------------------------------------------


class _Inventory(HTMLParser):
    """Every tag and attribute of a page, and the text of its first <pre>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str]] = []
        self.pre: list[str] = []
        self._in_pre = 0  # 1: inside the first <pre>, 2: after it

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += [(name, value or "") for name, value in attrs]
        if tag == "pre" and not self._in_pre:
            self._in_pre = 1

    def handle_endtag(self, tag):
        if tag == "pre" and self._in_pre == 1:
            self._in_pre = 2

    def handle_data(self, data):
        if self._in_pre == 1:
            self.pre.append(data)


def test_static_html_holds_only_its_own_elements(hostile):
    inv = _Inventory()
    inv.feed(heatmap_html(hostile.record, top_k=len(SENDABLE)))
    inv.close()
    assert inv.tags <= OWN_TAGS, inv.tags - OWN_TAGS
    names = {name for name, _ in inv.attrs}
    assert names <= OWN_ATTRS, names - OWN_ATTRS
    assert not [v for _, v in inv.attrs if "javascript:" in v.lower() or "<" in v]
    assert "".join(inv.pre) == hostile.record.prompt  # every payload comes back as text, exactly


# --- terminal -----------------------------------------------------------------------------------


def assert_terminal_safe(out: str) -> None:
    bad = sorted({f"U+{ord(c):04X}" for c in TERMINAL_UNSAFE.findall(out)})
    assert not bad, bad


def test_terminal_renderings_hold_no_control_characters(hostile):
    record = hostile.record
    plain = heatmap_terminal(record, color=False)
    coloured = heatmap_terminal(record, color=True)
    assert OWN_SGR.search(coloured)
    for out in (plain, OWN_SGR.sub("", coloured), top_table(record, k=len(SENDABLE))):
        assert_terminal_safe(out)
    for span in record.spans:  # shown, escaped, never dropped
        assert safe_terminal_text(span.text) in plain


def test_show_and_ls_print_no_control_characters(hostile, capsys):
    assert cli.main(["show", hostile.run_id, "--runs-dir", str(hostile.path.parent), "--top", "60"]) == 0
    out, err = capsys.readouterr()
    assert_terminal_safe(out + err)
    assert "\\x1b]52;c;" in out and "\\u202e" in out
    assert cli.main(["ls", "--runs-dir", str(hostile.path.parent)]) == 0
    assert_terminal_safe("".join(capsys.readouterr()))


def test_json_output_escapes_what_json_dumps_leaves_raw(hostile, capsys):
    """DEL, C1 and bidi controls come out as \\u escapes: safe on a terminal, the same JSON."""
    assert cli.main(["show", hostile.run_id, "--runs-dir", str(hostile.path.parent), "--json"]) == 0
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert json.loads(out)["prompt"] == hostile.record.prompt


def test_ls_escapes_a_tampered_run_file(hostile, tmp_path, capsys):
    """run.json is just a file: a run id or model planted in it must not reach the terminal raw."""
    record = hostile.record.model_copy(deep=True)
    record.run_id = "\x1b]0;owned\x07\x1b[2J"
    record.backend.model = "\x1b]52;c;ZXZpbA==\x07\u202e"
    folder = tmp_path / hostile.run_id
    folder.mkdir()
    (folder / "run.json").write_text(record.model_dump_json(), "utf-8")
    assert cli.main(["ls", "--runs-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert_terminal_safe(out + err)
    assert "\\x1b]0;owned" in out


@pytest.mark.parametrize("name", REFUSED)
def test_a_lone_surrogate_is_refused_before_any_run_folder(name, tmp_path):
    prompt = f"Hello there. {PAYLOADS[name]} Goodbye now."
    with pytest.raises(prompt_attr.UsageError, match="lone surrogate"):
        prompt_attr.attribute(prompt, backend=MarkupBackend(), runs_dir=tmp_path, cache=False)
    for option in ("system", "target", "label"):  # saved in run.json too
        with pytest.raises(prompt_attr.UsageError, match=f"{option}: .*lone surrogate"):
            prompt_attr.attribute("Hello there. Bye now.", backend=MarkupBackend(), runs_dir=tmp_path,
                                  cache=False, **{option: PAYLOADS[name]})
    assert list(tmp_path.iterdir()) == []
    assert_terminal_safe(safe_terminal_text(PAYLOADS[name]))
    safe_terminal_text(PAYLOADS[name]).encode("utf-8")  # printable without a crash


# --- a real browser -----------------------------------------------------------------------------

WIDGET_TAGS = {"div", "span", "button", "ul", "ol", "li", "ins", "del"}


def browser_text(text: str) -> str:
    """What an HTML parser makes of text: CR and CRLF become LF, NUL is dropped."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def watch_dialogs(page) -> list[str]:
    dialogs: list[str] = []
    page.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    return dialogs


def assert_inert(page, dialogs: list[str], scope: str, allowed: set[str]) -> None:
    page.page.wait_for_timeout(300)  # time for an onerror, onload or refresh to fire
    found = page.page.evaluate(FOREIGN_JS, scope)
    assert found["pwned"] == "undefined"
    assert dialogs == []
    assert found["handlers"] == []
    assert set(found["tags"]) <= allowed, set(found["tags"]) - allowed
    assert page.errors == []


@pytest.mark.browser
def test_static_html_is_inert_in_chromium(page, hostile):
    dialogs = watch_dialogs(page)
    url = page.page.url
    html = heatmap_html(hostile.record)
    page.page.set_content(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{html}</body></html>")
    assert_inert(page, dialogs, "body", OWN_TAGS)
    assert page.page.is_visible("pre")
    assert page.page.evaluate("document.querySelector('pre').textContent") == browser_text(hostile.record.prompt)
    assert page.page.url == url  # no meta refresh navigated away


@pytest.mark.browser
def test_widget_is_inert_and_shows_every_payload_as_text(page, hostile):
    dialogs = watch_dialogs(page)
    page.mount(view_state(AttributionWidget.from_attribution(hostile)))
    nodes = page.spans()
    assert [n["text"] for n in nodes] == [s.text for s in hostile.spans]
    assert page.page.is_visible("#root .pa-prompt")
    # the detail of every span quotes it and diffs the echoed answer: payloads there too
    spans = page.page.locator("#root .pa-span")
    for i in range(len(nodes)):
        spans.nth(i).dispatch_event("mouseenter")
        assert page.detail()["quote"] == hostile.spans[i].text
    assert page.page.evaluate("document.querySelector('#root .pa-baseline').textContent") == hostile.baseline
    assert_inert(page, dialogs, "#root", WIDGET_TAGS)
    script = SENDABLE.index(PAYLOADS["script"])
    spans.nth(script).click()
    page.page.mouse.move(0, 0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / "widget-hostile.png"
    page.page.screenshot(path=str(target))  # the viewport: the full widget is 5,000 px tall
    assert target.stat().st_size > 10_000
