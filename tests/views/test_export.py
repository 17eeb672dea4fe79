"""Export: CSV and JSON tables, standalone HTML reports (checked offline in chromium)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import prompt_attr
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli
from prompt_attr_widget.views import export

V1 = "It was late. The Blue Falcon landed safely. =HYPERLINK(\"http://x\") Alpha. My cat slept."
V2 = "It was late. The Red Falcon landed safely. <script>window.__pwned=1</script> Beta. My cat slept."
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture
def pair(runs_dir):
    a = prompt_attr.attribute(V1, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    b = prompt_attr.attribute(V2, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    return a, b


def test_csv_and_json_tables_hold_every_span_and_evaluation(pair):
    a, _ = pair
    spans = list(csv.DictReader(io.StringIO(a.to_csv("spans"))))
    assert [r["text"] for r in spans] == [s.text if not s.text.startswith("=") else "'" + s.text for s in a.spans]
    assert [float(r["score"]) for r in spans] == pytest.approx([s.score for s in a.spans])
    evaluations = json.loads(export.to_json(a.record, "evaluations"))
    assert len(evaluations) == len(a.record.evaluations)
    assert {tuple(e["dropped"]) for e in evaluations} == {tuple(e.dropped) for e in a.record.evaluations}
    assert list(csv.reader(io.StringIO(a.to_csv("evaluations"))))[0] == list(export.EVALUATION_COLUMNS)
    assert len(a.to_dataframe()) == len(a.spans)
    with pytest.raises(ValueError):
        export.rows(a.record, "nope")


def test_a_formula_never_reaches_a_spreadsheet_as_a_formula(pair):
    a, _ = pair
    cells = [c for row in csv.reader(io.StringIO(a.to_csv("spans"))) for c in row]
    def number(c: str) -> bool:
        try:
            float(c)
        except ValueError:
            return False
        return True

    assert not [c for c in cells if c and c[0] in "=+-@" and not number(c)]
    assert any(c.startswith("'=HYPERLINK") for c in cells)


def test_reports_are_complete_documents_that_load_nothing(pair):
    a, b = pair
    for page in (a.report_html(), prompt_attr.compare(a.run_id, b.run_id, runs_dir=a.runs_dir).report_html()):
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
        assert "default-src 'none'" in page
        assert "<script" not in page.lower().replace("&lt;script", "")
        assert "src=" not in page and "href=" not in page and "@import" not in page


def test_cli_export(pair, runs_dir, tmp_path, capsys):
    a, b = pair
    assert cli(["export", a.run_id, "--runs-dir", str(runs_dir)]) == 0
    assert capsys.readouterr().out.startswith("index,start,end,text,score")
    assert cli(["export", a.run_id, "--format", "json", "--table", "evaluations", "--runs-dir", str(runs_dir)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(a.record.evaluations)
    out = tmp_path / "report.html"
    assert cli(["export", a.run_id, "--format", "html", "--compare-with", b.run_id, "-o", str(out),
                "--runs-dir", str(runs_dir)]) == 0
    assert "vs" in out.read_text("utf-8")
    assert cli(["export", a.run_id, "--compare-with", b.run_id, "--runs-dir", str(runs_dir)]) == 2
    assert cli(["export", a.run_id, "-o", str(tmp_path / "no" / "such" / "dir.csv"), "--runs-dir", str(runs_dir)]) == 2


@pytest.mark.browser
def test_reports_open_offline_in_chromium(page, pair, tmp_path):
    a, b = pair
    comparison = prompt_attr.compare(a.run_id, b.run_id, runs_dir=a.runs_dir)
    requests, dialogs = [], []
    page.page.on("request", lambda r: requests.append(r.url))
    page.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for name, text in (("run-report", a.report_html()), ("comparison-report", comparison.report_html())):
        path = tmp_path / f"{name}.html"
        path.write_text(text, "utf-8")
        requests.clear()
        page.page.goto(path.as_uri())
        assert page.page.title().startswith("prompt_attr")
        assert page.page.evaluate("window.__pwned") is None and not dialogs
        assert requests == [path.as_uri()], requests  # the file itself, nothing else
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    rows = page.page.eval_on_selector_all("tr.pa-cmp-changed td", "tds => tds.map(t => t.textContent)")
    assert "The Blue Falcon landed safely." in rows and "The Red Falcon landed safely." in rows
    assert page.page.locator("ins").first.text_content()


SPOOF = "user\u202eexe.txt"  # shown raw, it reads "usertxt.exe"
BIDI_PROMPT = f"It was late. Open the Invoice named {SPOOF} today. My cat slept."
BIDI_ANSWER = f"I Opened {SPOOF}, the Invoice."
# The visible characters of an element in drawing order (line by line, left to right).
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


class EchoBackend(FakeBackend):
    """Answers with the spoofed file name in every answer, as a model quoting the prompt would."""

    async def complete(self, messages, params):
        import dataclasses

        answer = await super().complete(messages, params)
        return dataclasses.replace(answer, text=f"{answer.text} {BIDI_ANSWER}")


@pytest.mark.browser
def test_reports_show_a_bidi_spoof_in_logical_order(page, runs_dir, tmp_path):
    """The issue's case: in the run report and the comparison report `user\\u202eexe.txt` must
    read "userexe.txt" (the characters drawn left to right in their logical order), not
    "usertxt.exe", in the heat-map, the span table and the answers."""
    a = prompt_attr.attribute(BIDI_PROMPT, backend=EchoBackend(), runs_dir=runs_dir, method="loo")
    b = prompt_attr.attribute(BIDI_PROMPT.replace("late", "early"), backend=EchoBackend(), runs_dir=runs_dir,
                              method="loo")
    comparison = prompt_attr.compare(a.run_id, b.run_id, runs_dir=runs_dir)
    expected = "".join(c for c in f"Open the Invoice named {SPOOF} today." if c.strip() and c != "\u202e")
    assert "userexe.txt" in expected
    for name, text in (("bidi-run-report", a.report_html()), ("bidi-comparison-report", comparison.report_html())):
        path = tmp_path / f"{name}.html"
        path.write_text(text, "utf-8")
        page.page.goto(path.as_uri())
        raw = page.page.evaluate(f"(t) => {{ const p = document.createElement('pre'); p.textContent = t;"
                                 f" document.body.prepend(p); const seen = ({VISUAL_ORDER_JS})(p); p.remove();"
                                 f" return seen; }}", SPOOF)
        assert raw == "usertxt.exe"  # the measure sees a reordering where there is one
        spans = page.page.eval_on_selector_all(
            ".pa-span, td", f"(nodes) => nodes.filter((n) => n.textContent.includes({SPOOF!r}) &&"
                            f" !n.querySelector('.pa-span')).map({VISUAL_ORDER_JS})")
        assert spans and set(spans) == {expected}, spans
        answers = page.page.eval_on_selector_all(
            "pre, p", f"(nodes) => nodes.filter((n) => n.textContent.includes({BIDI_ANSWER!r}))"
                      f".map({VISUAL_ORDER_JS})")
        assert answers and all("Openeduserexe.txt,theInvoice." in seen for seen in answers), answers
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
