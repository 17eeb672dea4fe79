"""Hostile prompts (tests/data/hostile_prompts.json) through every rendering.

Each payload is one user span of a single run, and the backend repeats a
few payloads in every answer, so markup and escape sequences reach the
heat-map, the answers, the detail diff and the ranking. The static HTML must
hold only the renderer's own elements, the terminal no control sequence,
and a real Chromium must run none of it while showing all of it as text.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pty
import re
import sys
import threading
import tty
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser_harness import FOREIGN_JS, SCREENSHOTS, view_state

import prompt_attr
from prompt_attr_widget import cli
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.text import (
    BIDI_CONTROLS,
    BIDI_MARK_STYLE,
    safe_html_text,
    safe_terminal_text,
)
from prompt_attr_widget.views import export
from prompt_attr_widget.views.compare import compare_records
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.terminal import heatmap_terminal, top_table
from prompt_attr_widget.views.widget import AttributionWidget, CompareWidget

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
OWN_ATTRS = {"class", "style", "title", "data-index", "dir"}
# Everything a terminal could act on: C0 but tab and newline, DEL, C1, bidi controls.
TERMINAL_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
OWN_SGR = re.compile(r"\x1b\[(?:48;5;\d+|30|0)m")  # heatmap_terminal's colours
ANSWER_TAIL = "\n".join(PAYLOADS[n] for n in ("script", "img-onerror", "svg-onload", "iframe-srcdoc",
                                             "ansi-osc52-clipboard", "bidi-override", "bidi-filename", "nul",
                                             "c1-controls"))


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


@pytest.fixture(scope="module")
def edited(hostile):
    """A second run of the corpus with one payload replaced by another, to compare with the first."""
    prompt, spans = hostile_prompt()
    first = PAYLOADS["script"]
    assert prompt.startswith(first)
    swapped = PAYLOADS["bidi-filename"] + " Swapped"
    prompt = swapped + prompt[len(first):]
    shift = len(swapped) - len(first)
    spans = [(0, len(swapped))] + [(a + shift, b + shift) for a, b in spans[1:]]
    b = prompt_attr.attribute(prompt, backend=MarkupBackend(), runs_dir=hostile.path.parent, spans=spans,
                              method="loo", min_effect=0.002, cache=False)
    assert b.status == "finished"
    return b


def test_corpus_covers_the_attack_families():
    assert len(PAYLOADS) >= 30
    joined = "".join(PAYLOADS.values())
    for needle in ("<script", "<SCRIPT", "onerror", "<svg onload", "<iframe srcdoc", "javascript:", "<style",
                   "http-equiv", "&amp;lt;", "</textarea>", "</pre>", "-->", "${", "{{", "\x1b[", "\x1b]8;;",
                   "\x1b]52;", "\x1b]0;", "\x00", "\x85", "\u202e", "\u2066", "\u200b", "\ud800", "user\u202eexe.txt"):
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


# --- bidi controls in HTML -----------------------------------------------------------------------

BIDI = re.compile(f"[{BIDI_CONTROLS}]")
SPOOF = PAYLOADS["bidi-filename"]  # user\u202eexe.txt: shown raw, it reads "usertxt.exe"


class _BidiCheck(HTMLParser):
    """Every bidi control of a page's text, and the element it sits in."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.controls: list[tuple[str, str, dict]] = []  # (control, all the text of its element, attrs)
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br", "hr", "img", "input", "link"):  # void: no end tag comes
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        self.text.append(data)
        for control in BIDI.findall(data):
            tag, attrs = self.stack[-1] if self.stack else ("", {})
            self.controls.append((control, data, {"tag": tag, **attrs}))


def assert_bidi_inert(page: str) -> int:
    """Each bidi control is alone in a marked, isolating span; returns how many there are."""
    check = _BidiCheck()
    check.feed(page)
    check.close()
    for control, data, attrs in check.controls:
        assert data == control, f"U+{ord(control):04X} beside other text: {data!r}"
        assert attrs == {"tag": "span", "class": "pa-bidi", "dir": "ltr", "style": BIDI_MARK_STYLE,
                         "title": f"U+{ord(control):04X}: a bidi control, shown here and not applied"}, attrs
    return len(check.controls)


def test_safe_html_text_marks_every_bidi_control_and_keeps_the_text():
    text = "a\u061cb\u200e\u200f\u202a\u202b\u202c\u202d\u202ec\u2066\u2067\u2068\u2069 <b>&"
    out = safe_html_text(text)
    assert assert_bidi_inert(out) == 12
    check = _BidiCheck()
    check.feed(out)
    assert "".join(check.text) == text  # the same text, for a reader's copy and paste
    assert "<b>" not in out and "&lt;b&gt;&amp;" in out


def test_every_html_view_renders_bidi_controls_inert(hostile, edited):
    """The heat-map, the run report, the comparison (notebook HTML and report): prompt and
    answers hold every bidi payload, and none is left to reorder the text around it."""
    comparison = compare_records(hostile.record, edited.record)
    views = {
        "heat-map": heatmap_html(hostile.record, top_k=len(SENDABLE)),
        "run report": export.run_report(hostile.record),
        "comparison": comparison._repr_html_(),
        "comparison report": comparison.report_html(),
    }
    expected = sum(len(BIDI.findall(p)) for p in SENDABLE)  # in the prompt alone
    for name, page in views.items():
        assert SPOOF not in page, name
        assert assert_bidi_inert(page) >= expected, name


# --- export: a terminal gets the terminal rule, files and pipes the exact data --------------------


def _drain(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            return
        if not chunk:
            return
        into.append(chunk)


def export_to(kind: str, argv: list[str], monkeypatch) -> bytes:
    """Run `prompt-attr export` in this process with stdout on a real pty or a real pipe."""
    if kind == "terminal":
        reader_fd, writer_fd = pty.openpty()
        tty.setraw(writer_fd)  # no newline translation: the bytes as written
    else:
        reader_fd, writer_fd = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(reader_fd, chunks))
    reader.start()
    out = io.TextIOWrapper(os.fdopen(writer_fd, "wb"), encoding="utf-8", newline="")
    assert out.isatty() == (kind == "terminal")
    monkeypatch.setattr(sys, "stdout", out)
    try:
        assert cli.main(["export", *argv]) == 0
    finally:
        out.close()
        monkeypatch.undo()
        reader.join(10)
        os.close(reader_fd)
    return b"".join(chunks)


@pytest.mark.parametrize("fmt", ["csv", "json", "html"])
def test_export_to_a_terminal_is_neutralised_and_a_pipe_or_file_keeps_the_data(fmt, hostile, tmp_path, monkeypatch):
    argv = [hostile.run_id, "--runs-dir", str(hostile.path.parent), "--format", fmt]
    exact = (export.run_report(hostile.record) if fmt == "html" else getattr(export, f"to_{fmt}")(hostile.record))
    # what a terminal would act on is in the data (json.dumps itself escapes C0, not C1 or bidi)
    for raw in ("\x9b", "\u202e") if fmt == "json" else ("\x1b[2J", "\x1b]0;", "\x1b]8;;", "\x9b", "\u202e"):
        assert raw in exact
    shown = export_to("terminal", argv, monkeypatch).decode("utf-8")
    assert_terminal_safe(shown)
    for escaped in (("\\u001b[2J", "\\u009b", "\\u202e") if fmt == "json" else ("\\x1b[2J", "\\x1b]8;;", "\\x9b", "\\u202e")):
        assert escaped in shown, escaped
    if fmt == "json":
        assert json.loads(shown) == json.loads(exact)  # the same document
    assert export_to("pipe", argv, monkeypatch) == exact.encode("utf-8")
    target = tmp_path / f"out.{fmt}"
    assert cli.main(["export", *argv, "-o", str(target)]) == 0
    assert target.read_bytes() == exact.encode("utf-8")


def test_the_widgets_mark_the_same_bidi_controls_the_same_way():
    """js/ spells core/text.py's class of bidi controls once, in the helpers both widgets
    share, and widget.css draws their mark with the style the static HTML inlines."""
    root = Path(__file__).resolve().parents[2] / "js"
    common = (root / "common.js").read_text("utf-8")
    assert common.count(f"[{BIDI_CONTROLS}]") == 2  # the test and the split
    assert "a bidi control, shown here and not applied" in common
    for widget in (AttributionWidget, CompareWidget):
        assert str(widget._esm).startswith(common) and "el(" in str(widget._esm)[len(common):]
    css = (root / "widget.css").read_text("utf-8")
    (rule,) = re.findall(r"\.prompt-attr \.pa-bidi \{([^}]*)\}", css)
    assert rule.strip() == BIDI_MARK_STYLE


def test_export_help_says_what_a_terminal_gets(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a pipe or a file, the export is written unchanged" in text
    assert "When standard output is a terminal, control characters, escape sequences and bidi controls" in text


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


# Visible characters of an element in the order they are drawn (line by line, left to
# right), whitespace and zero-width characters left out: the text as a reader reads it.
VISUAL_ORDER_JS = """(el) => {
  const out = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  let n;
  while ((n = walker.nextNode())) {
    for (let i = 0; i < n.length; i++) {
      if (!n.data[i].trim()) continue;
      const r = document.createRange();
      r.setStart(n, i);
      r.setEnd(n, i + 1);
      const b = r.getBoundingClientRect();
      if (b.width > 0) out.push([Math.round(b.top / 4), b.left, n.data[i]]);
    }
  }
  out.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return out.map((x) => x[2]).join("");
}"""

# Every text node holding a bidi control: alone, in an isolating .pa-bidi span.
BIDI_NODES_JS = """(args) => {
  const [scope, pattern] = args;
  const bidi = new RegExp(`[${pattern}]`);
  const walker = document.createTreeWalker(document.querySelector(scope), NodeFilter.SHOW_TEXT);
  const found = [];
  let n;
  while ((n = walker.nextNode())) {
    if (!bidi.test(n.data)) continue;
    const p = n.parentElement, style = getComputedStyle(p);
    found.push({ data: n.data, cls: p.className, dir: p.dir, siblings: p.childNodes.length,
                 display: style.display, border: style.borderTopStyle, title: p.title });
  }
  return found;
}"""


def visual(page, selector: str, text: str) -> list[str]:
    """How each element matching `selector` whose text is `text` reads on screen."""
    return page.page.eval_on_selector_all(
        selector, f"(nodes, text) => nodes.filter((n) => n.textContent === text).map({VISUAL_ORDER_JS})", text)


def assert_marks(page, scope: str) -> int:
    found = page.page.evaluate(BIDI_NODES_JS, [scope, BIDI_CONTROLS])
    for node in found:
        assert len(node["data"]) == 1 and node["siblings"] == 1, node
        assert node["cls"] == "pa-bidi" and node["dir"] == "ltr", node
        assert node["display"] == "inline-block" and node["border"] == "dashed", node
        assert node["title"] == f"U+{ord(node['data']):04X}: a bidi control, shown here and not applied"
    return len(found)


def raw_reads(page) -> str:
    """The measure's own check: the spoof set as plain text reads reversed, as it would."""
    return page.page.evaluate(
        f"(text) => {{ const p = document.createElement('pre'); p.textContent = text; document.body.appendChild(p);"
        f" const seen = ({VISUAL_ORDER_JS})(p); p.remove(); return seen; }}", SPOOF)


@pytest.mark.browser
def test_bidi_spoofs_read_in_logical_order_in_chromium(page, hostile, edited):
    """user\u202eexe.txt reads "userexe.txt" (not "usertxt.exe") in the widget, the comparison
    widget and the static heat-map, in the prompt and in the answers."""
    assert raw_reads(page) == "usertxt.exe"
    expected = sum(len(BIDI.findall(p)) for p in SENDABLE)

    page.mount(view_state(AttributionWidget.from_attribution(hostile)))
    assert visual(page, "#root .pa-span", SPOOF) == ["userexe.txt"]
    assert assert_marks(page, "#root .pa-prompt") == expected
    assert assert_marks(page, "#root .pa-baseline") == len(BIDI.findall(ANSWER_TAIL))
    line = page.page.evaluate("() => document.querySelector('#root .pa-baseline').textContent")
    assert line == hostile.baseline  # the text itself is exact

    page.mount_compare(view_state(CompareWidget(compare_records(hostile.record, edited.record))))
    seen = visual(page, "#root .pa-cmp-text .pa-span", SPOOF)
    assert seen and set(seen) == {"userexe.txt"}
    assert assert_marks(page, "#root") >= 2 * expected

    page.page.set_content(f"<!doctype html><html><head><meta charset='utf-8'></head><body>"
                          f"{heatmap_html(hostile.record, top_k=len(SENDABLE))}</body></html>")
    assert visual(page, "pre .pa-span", SPOOF) == ["userexe.txt"]
    assert assert_marks(page, "pre") == expected
