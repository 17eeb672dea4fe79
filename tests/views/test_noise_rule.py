"""Noise is never shown as signal, in any view: a span below the floor gets no colour.

Built on records from the factory (tests/support.py), so each case is the
exact record it needs, with no model run.
"""

from __future__ import annotations

import html as html_lib
import re

from support import make_record

from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.scale import heat, level, scale_max
from prompt_attr_widget.views.terminal import heatmap_terminal, top_table

PROMPT = "Loud <img src=x onerror=alert(1)> span. Quiet \x1b[31mspan. Tiny span."


def _record():
    # span 1 scores well above 0, yet is not significant (the floor is 0.5); span 2 is unmeasured
    return make_record(PROMPT, [0.9, 0.3, None], significant=[True, False, None], noise_floor=0.5)


def test_the_scale_gives_no_level_to_noise_or_unmeasured_spans():
    r = _record()
    by_index = {s.index: s for s in r.attribution}
    top = scale_max(r)
    assert heat(by_index[0], top) == 1.0
    assert heat(by_index[1], top) is None
    assert heat(by_index.get(2), top) is None
    assert level(0.3, None, top) is not None, "not assessed is not noise"


def test_static_html_leaves_the_noise_span_uncoloured_and_escaped():
    out = heatmap_html(_record())
    spans = re.findall(r'<span class="([^"]*)" data-index="(\d)"[^>]*style="([^"]*)"', out)
    styles = {int(i): (cls, style) for cls, i, style in spans}
    assert "background" in styles[0][1]
    assert styles[1] == ("pa-span pa-noise", "color:inherit")
    assert "<img" not in out and html_lib.escape("<img src=x onerror=alert(1)>") in out


def test_terminal_colours_only_the_significant_span():
    out = heatmap_terminal(_record(), color=True)
    coloured = re.findall(r"\x1b\[48;5;\d+m\x1b\[30m([^\x1b]*)\x1b\[0m", out)
    assert coloured == ["Loud <img src=x onerror=alert(1)> span."]
    assert "\\x1b[31m" in out, "the prompt's own escape is shown, not obeyed"
    plain = heatmap_terminal(_record(), color=False)
    assert "[~0.30]Quiet" in plain and "[0.90]Loud" in plain


def test_top_table_ranks_by_score_and_says_noise():
    rows = top_table(_record()).splitlines()[1:3]
    assert rows[0].split()[1] == "0" and rows[0].split()[3] == "yes"
    assert rows[1].split()[1] == "1" and rows[1].split()[3] == "noise"


def test_a_surrogate_run_stopped_before_its_fit_is_not_called_hierarchical():
    from prompt_attr_widget.views.scale import run_notes

    record = make_record(status="aborted", scores=[None, None, None])
    record.config["method"] = "surrogate"
    assert record.surrogate is None
    assert run_notes(record)[0] == "estimator: surrogate (stopped before it was fitted: no scores)"


def test_a_failed_faithfulness_check_says_so_plainly():
    from prompt_attr_widget.core.schema import Faithfulness
    from prompt_attr_widget.views.scale import run_notes

    record = make_record()
    record.faithfulness = Faithfulness(k=3, top_k=[0, 1, 2], top_k_score=0.062, random_scores=[0.07, 0.088])
    line = run_notes(record)[-1]
    assert "top 3 together scores 0.062; 3 random spans 0.079" in line
    assert "FAILED" in line and "do not trust the ranking" in line
    record.faithfulness = Faithfulness(k=3, top_k=[0, 1, 2], top_k_score=0.5, random_scores=[0.07, 0.088])
    assert "FAILED" not in run_notes(record)[-1]
