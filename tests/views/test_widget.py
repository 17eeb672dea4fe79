"""The widget on the Python side: what it sends over its comm, its final state, its mime bundle.

No browser: a recording comm stands in for the kernel's, and records every
payload the widget opens or sends, exactly as ipywidgets hands it over.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from jupyter_client.session import json_packer
from support import displayed

import prompt_attr
import prompt_attr_widget.views.widget as widget_mod
from prompt_attr import Price
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.events import Evaluated, Progress
from prompt_attr_widget.core.text import usd
from prompt_attr_widget.stages.align import word_diff
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.scale import (
    heat,
    heat_css,
    live_significant,
    paint,
    rising_top,
    scale_max,
    scale_top,
)
from prompt_attr_widget.views.terminal import heatmap_terminal
from prompt_attr_widget.views.widget import AttributionWidget

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
FILLER = ["cat", "dog", "fox", "owl"]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def planted(n: int, culprits=(1,)) -> str:
    """n sentences; only the culprits carry capitalised words the fake model repeats."""
    sentences = [f"It {FILLER[i % 4]} sat near wall number {i}." for i in range(n)]
    for c in culprits:
        sentences[c] = f"The Zebra Quartet Number{c} Plays Loudly."
    return " ".join(sentences)


class Recorder:
    """Every comm payload (open and send), with its size as the kernel would serialise it."""

    def __init__(self, monkeypatch):
        import comm
        from comm.base_comm import BaseComm

        self.messages: list[dict] = []
        messages = self.messages

        class RecordingComm(BaseComm):
            def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
                messages.append(
                    {
                        "comm_id": self.comm_id,
                        "type": msg_type,
                        "data": data,
                        "bytes": len(json_packer(data)) + sum(len(b) for b in buffers or []),
                    }
                )

        monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))

    def of(self, w: AttributionWidget, kind: str | None = None) -> list[dict]:
        return [m for m in self.messages if m["comm_id"] == w.comm.comm_id and (kind is None or m["type"] == kind)]

    def updates(self, w: AttributionWidget) -> list[dict]:
        return [m for m in self.of(w, "comm_msg") if m["data"].get("method") == "update"]


@pytest.fixture
def recorder(monkeypatch):
    return Recorder(monkeypatch)


def answers(outputs: dict) -> dict:
    """The ablated answers a widget sent: each is a word diff against the baseline whose
    equal and insert pieces join to the answer."""
    return {k: None if ops is None else "".join(text for op, text in ops if op != "delete") for k, ops in outputs.items()}


def run_into_widget(prompt, runs_dir, *, backend=None, **kw):
    w = AttributionWidget()
    events = []
    t = time.perf_counter()
    a = prompt_attr.attribute(prompt, backend=backend or FakeBackend(), runs_dir=runs_dir, cache=False, on_event=[events.append, w], **kw)
    return a, w, events, time.perf_counter() - t


# --- (a) message size ----------------------------------------------------------------------------


@pytest.mark.parametrize("interval", ["default", "zero"])
def test_bytes_sent_grow_linearly_with_evaluations(recorder, runs_dir, monkeypatch, interval):
    if interval == "zero":
        monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)  # a sync per event: the worst case
    sizes, counts, opened = {}, {}, {}
    for n in (50, 100, 200):
        a, w, events, _ = run_into_widget(planted(n, culprits=(1, n // 2, n - 3)), runs_dir, method="loo", max_tokens=12, faithfulness="off")
        assert a.status == "finished" and len(a.spans) == n and len(a.record.evaluations) == n + 8  # + placebos
        updates = recorder.updates(w)
        assert recorder.of(w, "comm_open"), "the widget opened its comm through the recorder"
        opened[n] = sum(m["bytes"] for m in recorder.of(w, "comm_open"))
        sizes[n] = sum(m["bytes"] for m in updates)
        counts[n] = len(updates)
        if interval == "zero":
            assert counts[n] >= n, "with no throttle every evaluation is synced"
    ratio_100 = sizes[100] / sizes[50]
    ratio_200 = sizes[200] / sizes[100]
    line = (
        f"flush interval {interval}: N=200 evaluations -> {sizes[200]} bytes in {counts[200]} update messages "
        f"(+{opened[200]} bytes comm open, ESM and CSS included); N=100 {sizes[100]} B, N=50 {sizes[50]} B; "
        f"ratios 100/50 {ratio_100:.2f}, 200/100 {ratio_200:.2f}"
    )
    print(line)
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "message_bytes.txt"
    kept = [x for x in (out.read_text("utf-8").splitlines() if out.exists() else []) if not x.startswith(f"flush interval {interval}:")]
    out.write_text("\n".join([*kept, line]) + "\n", "utf-8")
    if interval == "zero":
        # a sync per event makes the count of messages deterministic: linear, not quadratic
        # (the throttled default sends as many messages as the timing allows, so its
        # ratios vary with the machine's load; its bytes per evaluation are bounded below)
        assert 1.6 < ratio_200 < 2.6, line
        assert 1.6 < ratio_100 < 2.6, line
    assert sizes[200] / 200 < 2_000, "more than 2 kB per evaluation"


def test_no_update_message_is_sent_empty_or_resends_the_prompt(recorder, runs_dir, monkeypatch):
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)
    a, w, _, _ = run_into_widget(planted(30, culprits=(2, 20)), runs_dir)
    updates = [m["data"]["state"] for m in recorder.updates(w)]
    assert all(updates), "an update with no state"
    assert sum("spans" in u for u in updates) == 1, "the prompt is sent once, at RunStarted"
    assert sum("outputs" in u for u in updates) <= 1 + max(e.round for e in a.record.evaluations) + 1


# --- (b) throttling --------------------------------------------------------------------------------


def test_default_interval_throttles_sync_messages(recorder, runs_dir):
    assert widget_mod.FLUSH_INTERVAL_S == 0.1
    a, w, events, elapsed = run_into_widget(planted(200, culprits=(5, 150)), runs_dir, method="loo", max_tokens=12)
    updates = recorder.updates(w)
    assert len(events) > 400
    # forced: RunStarted, the pass's checkpoint, the end (and the first flush); the rest at most one per interval
    bound = 4 + elapsed / widget_mod.FLUSH_INTERVAL_S + 1
    assert len(updates) <= bound, (len(updates), elapsed)
    assert len(updates) * 10 <= len(events), (len(updates), len(events))


# --- (c) the final state is the run ----------------------------------------------------------------


def _check_final_state(w: AttributionWidget, a) -> None:
    r = a.record
    assert w.scores == [round(s.score, 6) for s in a.spans]
    assert w.resolved == [s.resolved for s in a.spans]
    by_index = {s.index: s for s in r.attribution}
    assert w.evals == [by_index[i].evaluation for i in range(len(r.spans))]
    assert answers(w.outputs) == {str(e.id): e.output for e in r.evaluations}
    assert w.outputs == {str(e.id): [list(op) for op in word_diff(r.baseline.output, e.output, spacing=True)]
                         for e in r.evaluations}  # the one word diff (stages/align.py)
    assert all(str(e) in w.outputs for e in w.evals if e is not None)
    for span, eval_id in zip(a.spans, w.evals, strict=True):
        assert answers(w.outputs)[str(eval_id)] == span.ablated_output
    assert w.delta == {}
    assert w.baseline == a.baseline
    assert w.header["status"] == "finished" and w.header["run_id"] == a.run_id and w.header["model"] == "fake"
    assert w.header["reason"] is None
    assert w.progress["done"] == w.progress["planned"] == len(r.evaluations)
    assert w.progress["calls"] == r.spend.calls and w.progress["eta_s"] is None
    pieces = "".join(p["pre"] + p["text"] for p in w.spans) + w.tail
    assert pieces == r.prompt
    assert [p["text"] for p in w.spans] == [s.text for s in r.spans]
    res = w.result.record
    assert (res.run_id, res.status, res.evaluations, res.attribution, res.spend) == (r.run_id, r.status, r.evaluations, r.attribution, r.spend)


@pytest.mark.parametrize("method", ["loo", "hierarchical"])
@pytest.mark.parametrize("interval", ["default", "zero"])
def test_final_trait_state_equals_the_run(runs_dir, monkeypatch, method, interval):
    if interval == "zero":
        monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)
    a, w, _, _ = run_into_widget(planted(24, culprits=(3, 17)), runs_dir, method=method)
    assert a.status == "finished"
    if method == "hierarchical":
        assert any(not s.resolved for s in a.spans), "the run should leave some groups unrefined"
    _check_final_state(w, a)
    # a live view ends where a replay of the saved run starts
    replay = AttributionWidget.from_attribution(prompt_attr.load_run(a.run_id, runs_dir=runs_dir))
    names = ("header", "spans", "tail", "baseline", "scores", "resolved", "evals", "outputs", "delta", "progress",
             "significant", "heat", "muted", "ranking", "scale")
    assert {k: getattr(w, k) for k in names} == {k: getattr(replay, k) for k in names}


def test_a_checkpoint_carries_every_answer_so_far(runs_dir, monkeypatch):
    """At the end of each pass the full state (scores and outputs) is on the widget, mid-run."""
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)
    w = AttributionWidget()
    seen = []

    def after_estimate(event):
        if type(event).__name__ == "Estimate" and w.record.status == "running":
            seen.append((answers(w.outputs), {str(e.id): e.output for e in w.record.evaluations}, w.delta))

    a = prompt_attr.attribute(planted(24, culprits=(3, 17)), backend=FakeBackend(), runs_dir=runs_dir, cache=False, on_event=[w, after_estimate])
    assert len(seen) >= 2, "expected several passes"
    for outputs, expected, delta in seen:
        assert outputs == expected
        assert delta == {}
    _check_final_state(w, a)


# --- (d) the mime bundle ---------------------------------------------------------------------------

HOSTILE = "Hello <script>alert(1)</script> World.\n\nLook <img src=x onerror=\"alert(2)\"> Here.\n\nIt is calm & quiet."


def _bundle(w):
    b = w._repr_mimebundle_()
    data, metadata = b if isinstance(b, tuple) else (b, {})
    return data, metadata


def test_displayed_as_the_live_view_then_its_saved_view(runs_dir):
    a = prompt_attr.attribute(HOSTILE, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    one = AttributionWidget.from_attribution(prompt_attr.load_run(a.run_id, runs_dir=runs_dir))
    two = AttributionWidget.from_attribution(prompt_attr.load_run(a.run_id, runs_dir=runs_dir))
    (d1, s1), (d2, s2) = displayed(one), displayed(two)
    # the live view: the widget, and a fixed text where it cannot be drawn; never a second heat-map
    assert d1 == _bundle(one)[0] and d1["text/plain"] == d2["text/plain"] == widget_mod.LIVE_VIEW_TEXT
    assert set(d1) == {"text/plain", WIDGET_VIEW}
    # the saved view's text/plain: stable, no memory address, says what the run is
    assert s1["text/plain"] == s2["text/plain"] == repr(one) == one.summary()
    assert not re.search(r"0x[0-9a-fA-F]+", s1["text/plain"])
    assert s1["text/plain"].startswith(f"AttributionWidget(finished, {len(a.spans)} spans, {len(a.record.evaluations)} evaluations, model fake")
    # the saved view: static HTML, paired with its live view by the widget's view_key
    assert set(s1) == {"text/html", "text/plain"} and one.view_key != two.view_key
    assert f'data-prompt-attr-view="{one.view_key}"' in s1["text/html"]
    # deterministic but for the key, and escaped
    assert s1["text/html"].replace(one.view_key, "KEY") == s2["text/html"].replace(two.view_key, "KEY")
    html = s1["text/html"].lower()
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in s1["text/html"]
    assert "&amp; quiet" in s1["text/html"]
    assert a.run_id in s1["text/html"] and f"%attribute_show {a.run_id}" in s1["text/html"]
    # the widget view points at this widget's model
    assert d1[WIDGET_VIEW]["model_id"] == one.model_id != two.model_id
    assert d1[WIDGET_VIEW]["version_major"] == 2
    # two separate identical runs: the same summary
    b = prompt_attr.attribute(HOSTILE, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    assert b.run_id != a.run_id
    assert displayed(AttributionWidget.from_attribution(b))[1]["text/plain"] == s1["text/plain"]
    # the widget is JSON all the way down (what a notebook saves)
    json.dumps(one.get_state())


def test_mimebundle_of_an_empty_widget():
    live, saved = displayed(AttributionWidget())
    assert saved["text/plain"] == "AttributionWidget(empty)" and "had not ended" in saved["text/html"]
    assert "text/html" not in live and WIDGET_VIEW in live


def test_the_saved_view_is_redrawn_when_the_run_ends(runs_dir):
    """A cell shows the widget before the run starts; its saved view must end with the run's heat-map."""
    from IPython.display import display
    from IPython.utils.capture import capture_output

    w = AttributionWidget()
    with capture_output() as captured:
        display(w)
        a = prompt_attr.attribute(HOSTILE, backend=FakeBackend(), runs_dir=runs_dir, method="loo", on_event=w)
        w.refresh_saved_view()
    first, update = captured.outputs[1], captured.outputs[-1]
    assert "had not ended" in first.data["text/html"] and a.run_id not in first.data["text/html"]
    assert update.update and update.transient == first.transient  # the same display, redrawn in place
    assert a.run_id in update.data["text/html"] and f'data-prompt-attr-view="{w.view_key}"' in update.data["text/html"]
    assert update.data["text/html"] == displayed(w)[1]["text/html"]


# --- (e) aborted runs --------------------------------------------------------------------------------


def _projection(prompt, runs_dir, make, **kw) -> float:
    with pytest.raises(prompt_attr.BudgetRefused) as info:
        prompt_attr.attribute(prompt, backend=make(), runs_dir=runs_dir, budget=0, **kw)
    return info.value.projected_usd


def test_budget_stop_shows_aborted(runs_dir):
    prompt = planted(40, culprits=(9,))

    def make():
        return FakeBackend(price=Price(input=1.0, output=0.0), embed_price=Price(input=0.0), latency=0.002)

    options = dict(method="loo", max_tokens=8, concurrency=4, faithfulness="off", behaviour_checks=0)
    budget = _projection(prompt, runs_dir, make, **options)
    a, w, _, _ = run_into_widget(prompt, runs_dir, backend=make(), budget=budget, **options)
    assert a.status == "aborted" and "budget" in a.record.reason
    assert 0 < len([e for e in a.record.evaluations if e.purpose == "attribution"]) < 40
    assert w.header["status"] == "aborted"
    assert w.header["reason"] == a.record.reason
    assert w.progress["done"] == w.progress["planned"] == len(a.record.evaluations)
    assert w.scores == [None if s.score is None else round(s.score, 6) for s in a.spans]
    assert answers(w.outputs) == {str(e.id): e.output for e in a.record.evaluations}
    assert w.summary().startswith("AttributionWidget(aborted,")
    assert "aborted: " in displayed(w)[1]["text/html"]


@pytest.mark.parametrize("interval", ["default", "zero"])
def test_stop_button_cancels_a_background_run(runs_dir, monkeypatch, interval):
    """The front-end's Stop (stop_requested over the comm) ends the run as aborted."""
    if interval == "zero":
        monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)

    async def notebook():
        w = AttributionWidget()
        started = time.monotonic()

        async def job(sink):
            return await prompt_attr.attribute_async(
                planted(60, culprits=(4,)), backend=FakeBackend(latency=0.02), runs_dir=runs_dir,
                method="loo", cache=False, concurrency=2, on_event=sink,
            )

        w.start(job)
        # long enough for several flushes: scores already shown must survive the Stop
        while not w.record or len(w.record.evaluations) < 3 or time.monotonic() - started < 0.3:
            await asyncio.sleep(0.005)
        assert w.header["status"] == "running" and w.header["can_stop"] is True
        # what the browser sends when Stop is clicked
        w._handle_msg({"content": {"data": {"method": "update", "state": {"stop_requested": True}, "buffer_paths": []}}, "buffers": []})
        return w, await w

    w, result = asyncio.run(notebook())
    assert result.status == "aborted" and "interrupted" in result.record.reason
    assert 3 <= len(result.record.evaluations) < 60 + 8
    assert w.header["status"] == "aborted" and w.header["reason"] == result.record.reason
    assert w.progress["done"] == len(result.record.evaluations)
    # the heat-map keeps every score it showed before Stop (no span falls back to pending)
    measured = {e.dropped[0]: e for e in result.record.evaluations if e.purpose == "attribution"}
    assert w.scores == [round(measured[i].score, 6) if i in measured else None for i in range(60)]
    assert w.evals == [measured[i].id if i in measured else None for i in range(60)]
    assert answers(w.outputs) == {str(e.id): e.output for e in result.record.evaluations}
    assert prompt_attr.load_run(result.run_id, runs_dir=runs_dir).status == "aborted"


def test_awaiting_a_widget_that_runs_nothing_is_an_error():
    with pytest.raises(RuntimeError, match="not running a background attribution"):
        AttributionWidget().__await__()


def test_a_second_run_into_the_same_widget_replaces_the_first(runs_dir):
    w = AttributionWidget()
    first = prompt_attr.attribute(planted(8, culprits=(1,)), backend=FakeBackend(), runs_dir=runs_dir, on_event=w)
    second = prompt_attr.attribute("The Owl Sings. It is late.", backend=FakeBackend(), runs_dir=runs_dir, on_event=w)
    assert first.run_id != second.run_id
    _check_final_state(w, second)


# --- (f) one scale for every view: the widget draws what views/scale.py decides ---------------------

JS = Path(__file__).resolve().parents[2] / "js"
# Capitalised sentences matter to the fake model, the rest is noise; more than 2 / group_fraction
# spans, so hierarchical runs refine.
GUIDE = " ".join(["You are a Travel Guide for Paris.", "it is sunny.", "the river is wide.", "bread is fresh.",
                  "Always Answer In French.", "museums open late.", "trains are quick.", "The Eiffel Tower opens at Nine.",
                  "cafes are busy.", "streets are old.", "parks are green.", "Mention The Louvre Museum.", "bikes are cheap."])


def _html_backgrounds(html: str) -> dict[int, str]:
    """Each span's heat background in the static heat-map ('' for none)."""
    spans = re.findall(r'<span class="[^"]*" data-index="(\d+)"(?: style="([^"]*)")?', html)
    return {int(i): (re.search(r"background:([^;]+)", style or "") or [None, ""])[1] for i, style in spans}


@pytest.mark.parametrize("kind", ["loo", "hierarchical", "surrogate"])
def test_widget_html_and_terminal_draw_the_same_levels(runs_dir, kind):
    options = {"loo": {"method": "loo"}, "hierarchical": {},
               "surrogate": {"method": "surrogate", "segment": "line", "target": "Lyon"}}[kind]
    prompt = ("Our office is in the city.\nThe team meets in Lyon every week.\nWe like coffee.\n"
              "The headquarters are in Lyon too.\nLunch is at noon.") if kind == "surrogate" else GUIDE
    backend = FakeBackend(logprobs=kind == "surrogate")
    a = prompt_attr.attribute(prompt, backend=backend, runs_dir=runs_dir, cache=False, **options)
    r = a.record
    assert kind != "hierarchical" or max(e.round for e in r.evaluations) >= 1
    assert {s.significant for s in r.attribution} >= {True, False}, "the run needs signal and noise"
    top = scale_max(r)
    by_index = {s.index: s for s in r.attribution}
    levels = [heat(by_index.get(i), top) for i in range(len(r.spans))]
    for w in (AttributionWidget.from_attribution(a), run_into_widget(prompt, runs_dir, backend=backend, **options)[1]):
        assert w.heat == [heat_css(x) for x in levels]
        assert w.muted == [by_index[i].significant is False for i in range(len(r.spans))]
        assert w.scale["top"] == top and w.scale["colours"] == [heat_css(0.0), heat_css(1.0)]
        assert w.ranking == [s.index for s in r.ranked()[:5]]
    # the static heat-map paints exactly these colours, and the terminal colours exactly these spans
    assert _html_backgrounds(heatmap_html(r)) == dict(enumerate(w.heat))
    coloured = [bool(x) for x in w.heat]
    assert heatmap_terminal(r).count("\x1b[48;5;") == sum(coloured) + sum(
        r.spans[i].text.count("\n") for i in range(len(r.spans)) if coloured[i])


def test_live_deltas_carry_the_scales_colours(recorder, runs_dir, monkeypatch):
    """Every live score comes with the colour and the noise flag views/scale.py gives it
    against the floor and the scale's top of that moment; the view never judges."""
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)
    a, w, _, _ = run_into_widget(GUIDE, runs_dir, method="loo", faithfulness="off")
    floor, top, scores, checked, muted = None, None, {}, 0, 0
    for u in (m["data"]["state"] for m in recorder.updates(w)):
        floor = u.get("header", {}).get("noise_floor", floor)
        top = u.get("scale", {}).get("top", top)
        if "scores" in u:
            scores = {i: s for i, s in enumerate(u["scores"]) if s is not None}
            assert top == pytest.approx(scale_top(scores.values()), abs=1e-6)  # a checkpoint's scale is the run's own
        d = u.get("delta") or {}
        for i, s, resolved, _eval, css, flag in d.get("scores", []):
            scores[i] = s
            assert [css, flag] == list(paint(s, live_significant(s, resolved, floor), top))
            checked, muted = checked + 1, muted + flag
        if "heat" in d:
            assert top >= max(scores.values(), default=0)
            assert d["heat"][:3] == [paint(scores.get(i), live_significant(scores.get(i), True, floor), top)[0] for i in range(3)]
    assert checked >= len(a.spans) and muted > 0, "live noise must be judged (and sent) by Python"


def test_climbing_scores_recolour_every_span_only_a_few_times(recorder, runs_dir, monkeypatch):
    """Each score above the scale's top changes every colour; the top rises in round steps,
    so scores that climb all run long re-send every colour a few times, not once per
    evaluation: the bytes stay linear in the evaluations."""
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0)
    sizes, recolours = {}, {}
    for n in (50, 100, 200):
        events = []
        prompt_attr.attribute(planted(n, culprits=(1,)), backend=FakeBackend(), runs_dir=runs_dir, method="loo",
                              cache=False, max_tokens=12, faithfulness="off", on_event=events.append)

        def climbing(event, n=n):
            if isinstance(event, Evaluated) and event.evaluation.purpose == "attribution":
                i = event.evaluation.dropped[0]
                return event.model_copy(update={"evaluation": event.evaluation.model_copy(update={"score": (i + 1) / n})})
            return event

        w = AttributionWidget()
        for event in events:
            w(climbing(event))
        updates = recorder.updates(w)
        sizes[n] = sum(m["bytes"] for m in updates)
        recolours[n] = sum("heat" in (m["data"]["state"].get("delta") or {}) for m in updates)
    # 0.05 to 1 in round steps (0.06, 0.08, 0.1, ... 0.8, 1), and once for the noise floor
    assert max(recolours.values()) <= 14, recolours
    assert 1.6 < sizes[200] / sizes[100] < 2.6 and 1.6 < sizes[100] / sizes[50] < 2.6, sizes


def test_rising_top_steps():
    assert rising_top(0.05, 0.049) == 0.05 and rising_top(0.05, None) == 0.05
    assert [rising_top(0.05, x) for x in (0.051, 0.06, 0.0601, 0.09, 0.11, 0.7, 0.81, 1.0, 9.5, 123.0)] == [
        0.06, 0.06, 0.08, 0.1, 0.12, 0.8, 1.0, 1.0, 10.0, 150.0]


def test_spend_is_shown_as_core_text_usd_formats_it(runs_dir):
    backend = FakeBackend(price=Price(input=0.5, output=0.0), embed_price=Price(input=0.0))
    a, w, _, _ = run_into_widget(planted(6, culprits=(1,)), runs_dir, backend=backend, method="loo")
    assert 0 < a.record.spend.usd < 0.01
    assert w.progress["spend"] == usd(a.record.spend.usd) and w.progress["spend"].startswith("$0.00")
    live = AttributionWidget()
    live(Progress(done=1, planned=2, calls=1, cache_hits=0, spend_usd=0.0001234, elapsed_s=0.1, eta_s=0.1))
    assert live.progress["spend"] == usd(0.0001234) == "$0.000123"


def test_front_end_holds_no_scoring_rule():
    """The JavaScript applies what Python sends: no colour formula, scale top, noise rule,
    ranking, diff or money format of its own (they live in views/scale.py, stages/align.py
    and core/text.py)."""
    for name in ("widget.js", "compare.js"):
        code = re.sub(r"^\s*//.*$", "", (JS / name).read_text("utf-8"), flags=re.M)  # code, not comments
        for rule in ("0.62", "0.08", "220", "noise_floor", ".sort(", "wordDiff", "toFixed(4)", "toFixed(6)",
                     "spend_usd", "score / ", "<= floor"):
            assert rule not in code, (name, rule)
    assert "linear-gradient(to right, rgba" not in (JS / "widget.css").read_text("utf-8")  # the legend's too


def test_progress_never_goes_backwards_and_names_the_phase(runs_dir):
    """Calls used to drop to 0 between passes (the record counts none until the end), and the
    planned total fell back as each hierarchical pass planned the next."""
    filler = [f"It was quiet in room {i}." for i in range(40)]
    filler[5] = "The Green Door Opened."
    widget = AttributionWidget()
    shown = []
    prompt_attr.attribute(" ".join(filler), backend=FakeBackend(latency=0.001), runs_dir=runs_dir, cache=False,
                          on_event=[widget, lambda event: shown.append(dict(widget.progress))])
    running = [p for p in shown if p.get("phase") not in (None, "finished")]
    assert running, shown
    for before, after in zip(running, running[1:], strict=False):
        assert after.get("calls", 0) >= before.get("calls", 0), (before, after)
        assert after.get("planned", 0) >= before.get("planned", 0), (before, after)
        assert after.get("done", 0) >= before.get("done", 0), (before, after)
    phases = list(dict.fromkeys(p["phase"] for p in running))  # (the view is sent at most ten times a second)
    order = ["starting", "baseline", "noise floor", "pass", "faithfulness checks"]
    steps = [order.index(ph.split()[0] if ph.startswith("pass ") else ph) for ph in phases]
    assert steps == sorted(steps), phases
    passes = [int(m[1]) for ph in phases if (m := re.fullmatch(r"pass (\d+) of ~\d+", ph))]
    assert len(passes) >= 2 and passes == sorted(passes), phases
    assert widget.progress["calls"] == widget.record.spend.calls > 0 and widget.progress["phase"] == "finished"


def test_the_title_names_the_estimator_the_run_used(runs_dir):
    """A hierarchical run of three spans is leave-one-out: the title says so, as the notes do."""
    few = prompt_attr.attribute("The Zebra plays. It is calm. Hello There.", backend=FakeBackend(), runs_dir=runs_dir)
    w = AttributionWidget.from_attribution(few)
    assert few.record.settings.method == "hierarchical" and w.header["method"] == "leave-one-out"
    assert any(n.startswith("estimator: leave-one-out (too few spans") for n in w.header["notes"])
    many = prompt_attr.attribute(planted(12, culprits=(3,)), backend=FakeBackend(), runs_dir=runs_dir)
    assert AttributionWidget.from_attribution(many).header["method"] == "hierarchical"


def test_the_saved_view_follows_the_run_pass_by_pass(runs_dir):
    """A notebook saved mid-run (JupyterLab autosaves) keeps the last pass, not "had not ended"."""
    from IPython.display import display
    from IPython.utils.capture import capture_output

    w = AttributionWidget()
    with capture_output() as captured:
        display(w)
        a = prompt_attr.attribute(planted(24, culprits=(5,)), backend=FakeBackend(), runs_dir=runs_dir, on_event=w)
    updates = [o for o in captured.outputs if o.update]
    assert a.status == "finished" and max(e.round for e in a.record.evaluations) >= 1
    assert len(updates) >= 3  # every pass's estimate, then the end
    shown = [o.data["text/html"] for o in updates]
    assert all(a.run_id in h for h in shown) and "running" in shown[0] and "finished" in shown[-1]
    assert shown[-1] == displayed(w)[1]["text/html"]  # the last one is the finished run's
