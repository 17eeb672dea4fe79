"""The live heat-map widget (anywidget; front-end in js/widget.js).

The widget is an event sink: it folds engine events into its own copy of
the run record and syncs traits to the browser at most ten times a second,
inside `hold_sync()`. Live updates carry only what changed (`delta`); the
full state (`scores`, `heat`, `outputs`, ...) is re-sent only at the end of
each pass and of the run, so the bytes sent grow linearly with the
evaluations. A view opened in the middle of a pass catches up at the pass's
end.

Python decides everything the front-end draws: each span's heat colour and
noise flag (views/scale.py, the rule every view uses), the ranking, the
legend, each ablated answer's word diff against the baseline
(stages/align.py), the spend as text (core/text.py). The JavaScript only
applies them. A live score's colour is relative to the scale's top, so
when a score above the top arrives every colour changes: the live top then
rises to a round step (`rising_top`), which happens a few times per decade
of scores, and only then does a delta carry every span's colour.

Displayed, a widget is two outputs: the live view and its saved view, a
deterministic static heat-map with a stable `text/plain` summary, which the
live view hides while it is on the page. A notebook reopened after its
kernel is gone, GitHub and nbconvert show the saved view (views/html.py:
saved_view_html).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anywidget
import traitlets as t

from ..core.errors import UsageError
from ..core.events import (
    BaselineDone,
    Estimate,
    Evaluated,
    FaithfulnessMeasured,
    NoiseMeasured,
    Progress,
    RunAborted,
    RunFailed,
    RunFinished,
    RunStarted,
)
from ..core.reducer import apply_event
from ..core.schema import RunRecord
from ..core.text import one_line, safe_html_text, usd
from ..stages.align import word_diff
from ..stages.retarget import can_retarget, parts_of, retarget
from .html import heatmap_html, saved_view_html
from .parts import answer_matrix, drive_label, drives
from .result import Attribution
from .scale import (
    MIN_TOP,
    estimator_label,
    legend,
    live_significant,
    paint,
    phase,
    rising_top,
    run_notes,
    scale_top,
    top_indices,
    verdict,
)

FLUSH_INTERVAL_S = 0.1
PARTS_INTERVAL_S = 1.0  # a live run's answer-part views are recomputed at most this often between passes
TOP_K = 5  # spans in the widget's ranking
MAX_DIFF_WORDS_PRODUCT = 4_000_000  # longer answer pairs are shown undiffed
LIVE_VIEW_TEXT = ""  # where the live view cannot be drawn, its saved view after it says everything


def _asset(name: str) -> str:
    """A front-end file: from js/ beside the package in a source tree (the file being
    edited, whatever is installed), else from the wheel's data package."""
    source = Path(__file__).resolve().parents[2] / "js" / name
    if source.is_file():
        return source.read_text("utf-8")
    return resources.files("prompt_attr_widget.static").joinpath(name).read_text("utf-8")


@dataclass
class _Shown:
    """What the view shows for one span (the widget's mirror of the front-end's state)."""

    index: int
    score: float | None = None  # unrounded: colours come from the record's own figures
    resolved: bool = False
    evaluation: int | None = None
    stderr: float | None = None
    significant: bool | None = None  # the run's verdict (None: not assessed)
    live: bool = False  # a live score, judged against the floor until the next estimate


class _TwoOutputs(anywidget.AnyWidget):
    """An anywidget displayed as two outputs: its live view, then its saved view.

    Front-ends keep a widget's state in the kernel, so the live view alone
    leaves "Error displaying widget: model not found" in a notebook reopened
    after its kernel is gone. The saved view (`_saved_body`, static HTML)
    shows there instead; the live view hides it while it is drawn
    (`view_key` pairs the two). `refresh_saved_view()` redraws it from what
    the widget shows now: at each checkpoint of a run, and when it ends.
    """

    view_key = t.Unicode("").tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.view_key = uuid.uuid4().hex
        self._saved_handles: list = []

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, None)
        display(data, raw=True, metadata=metadata)
        self._saved_handles.append(display(self._saved_bundle(), raw=True, display_id=True))

    def refresh_saved_view(self) -> None:
        """Redraw the saved view of every display of this widget from what it shows now.

        In a context of its own: ipykernel sends a display under the request in the
        context (a background job's is its cell's, long finished: front-ends drop
        that), else under the request running now, from any thread (a blocking
        cell's run calls this from its worker thread)."""
        contextvars.Context().run(self._redraw_saved)

    def _redraw_saved(self) -> None:
        for handle in self._saved_handles:
            handle.update(self._saved_bundle(), raw=True)

    def _saved_bundle(self) -> dict:
        return {"text/html": saved_view_html(self.view_key, self._saved_body()), "text/plain": self.summary()}

    def _saved_body(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        """The live view, with no text of its own for where it cannot be drawn: the saved view
        after it has the summary, and this output is never redrawn (a summary here would
        stay at the "empty" of the moment it was displayed)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data["text/plain"] = LIVE_VIEW_TEXT
        return bundle

    def summary(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.summary()


class AttributionWidget(_TwoOutputs):
    _esm = _asset("common.js") + _asset("widget.js")
    _css = _asset("widget.css")

    header = t.Dict().tag(sync=True)
    spans = t.List().tag(sync=True)
    tail = t.Unicode("").tag(sync=True)
    baseline = t.Unicode("").tag(sync=True)
    scores = t.List().tag(sync=True)
    resolved = t.List().tag(sync=True)
    evals = t.List().tag(sync=True)
    stderr = t.List().tag(sync=True)
    significant = t.List().tag(sync=True)
    heat = t.List().tag(sync=True)
    muted = t.List().tag(sync=True)
    ranking = t.List().tag(sync=True)
    scale = t.Dict().tag(sync=True)
    outputs = t.Dict().tag(sync=True)
    delta = t.Dict().tag(sync=True)
    progress = t.Dict().tag(sync=True)
    stop_requested = t.Bool(False).tag(sync=True)
    # Any part of the answer, from the evaluations so far (no model call; stages/retarget.py):
    answer_parts = t.List().tag(sync=True)  # [{pre, text, kind}]: the baseline answer in its parts
    answer_tail = t.Unicode("").tag(sync=True)
    part_views = t.List().tag(sync=True)  # one per part: what the heat-map shows for it (see _view)
    parts_note = t.Unicode("").tag(sync=True)  # why the parts cannot be scored ("" when they can)
    drives = t.List().tag(sync=True)  # per span: "drives: '…'" for an untargeted run, else ""
    verdicts = t.List().tag(sync=True)  # per span: its flag in words (views/scale.py: verdict), "" if none
    focus = t.Dict().tag(sync=True)  # {seq, start, end}: a selection of the answer, set by the browser
    focus_view = t.Dict().tag(sync=True)  # the kernel's answer to `focus`: a view as in part_views, or an error

    def __init__(self, record: RunRecord | None = None, **kwargs):
        super().__init__(**kwargs)
        self.record: RunRecord | None = None
        self._lock = threading.Lock()
        self._pending_scores: dict[int, list] = {}
        self._live_scores: dict[int, list] = {}  # every live score of this run, for checkpoints
        self._pending_outputs: list = []
        self._pending_progress: dict | None = None  # the engine's Progress not sent yet
        self._last_progress: dict | None = None  # the engine's latest Progress (calls so far, planned, elapsed)
        self._passes = 0  # estimates seen: each pass ends with one
        self._last_flush = 0.0
        self._seq = 0
        self._task: asyncio.Task | None = None
        self._group_size: list[int] = []
        self._header_dirty = False
        self._shown: list[_Shown] = []
        self._top = MIN_TOP
        self._floor: float | None = None
        self._restyle = False  # every span's colour changed (the floor arrived): the next delta sends all
        self._ranking: list[int] = []
        self._diffs: dict[int, list | None] = {}  # evaluation id: its answer's diff against the baseline
        self._parts_at = 0.0  # when the part views were last computed
        self._parts_stale = False  # evaluations arrived since
        self._drives: dict = {}  # span index: the answer part it drives (views/parts.py)
        self.observe(self._on_focus, names="focus")
        if record is not None:
            self._load(record)

    # -- building from a finished run ---------------------------------------

    @classmethod
    def from_attribution(cls, result: Attribution) -> AttributionWidget:
        return cls(result.record)

    def _load(self, record: RunRecord) -> None:
        self.record = record
        with self.hold_sync():
            self._send_header()
            self.spans, self.tail = _span_pieces(record)
            self.baseline = record.baseline.output if record.baseline else ""
            self._send_checkpoint(with_outputs=True)
            self.answer_parts, self.answer_tail = [], ""  # a new run's answer, when the baseline is known
            self._send_parts(final=record.status != "running")
            self.progress = _shown_progress(record, self._last_progress, self._passes)

    # -- the event sink -----------------------------------------------------

    def __call__(self, event) -> None:
        """Fold one engine event in; called from the engine's thread or loop."""
        with self._lock:
            if isinstance(event, Progress):
                self._pending_progress = self._last_progress = {**event.model_dump(), "spend": usd(event.spend_usd)}
            else:
                self.record = apply_event(self.record, event)
            if isinstance(event, RunStarted):
                self._group_size = [len(self.record.spans) + 1] * len(self.record.spans)
                self._live_scores = {}
                self._diffs = {}
                self._load(self.record)
                return
            if isinstance(event, Evaluated):
                self._note_evaluation(event)
                self._parts_stale = True
            if isinstance(event, Estimate):
                self._passes += 1
            if isinstance(event, NoiseMeasured):
                self._floor, self._restyle = event.noise.floor, True  # live scores are judged against it
            if isinstance(event, (BaselineDone, NoiseMeasured, Estimate, FaithfulnessMeasured)):
                self._header_dirty = True  # the floor, the target, the notes: sent with the next flush
            terminal = isinstance(event, (RunFinished, RunAborted, RunFailed))
            if isinstance(event, Estimate) or terminal or time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
                self._flush(checkpoint=isinstance(event, Estimate) or terminal, final=terminal)

    def _note_evaluation(self, event: Evaluated) -> None:
        ev = event.evaluation
        self._pending_outputs.append([ev.id, self._diff(ev)])
        if ev.purpose != "attribution" or self.record.settings.method == "surrogate":
            return  # one random mask says nothing about one span: wait for the next fit
        size = len(ev.dropped)
        for i in ev.dropped:  # the smallest group measured so far speaks for a span
            if size < self._group_size[i]:
                self._group_size[i] = size
                self._pending_scores[i] = self._live_scores[i] = [i, ev.score / size, size == 1, ev.id]

    def _flush(self, *, checkpoint: bool, final: bool = False) -> None:
        self._last_flush = time.monotonic()
        with self.hold_sync():
            if self.record and self.record.baseline and not self.baseline:
                self.baseline = self.record.baseline.output
            if checkpoint:
                # Outputs too: the checkpoint replaces the view's whole state, so
                # answers sent in earlier deltas must be in it (and a view opened
                # mid-run catches up on them here).
                self._send_checkpoint(with_outputs=True)
                self._send_parts(final=final)
                # and the saved view: a notebook saved mid-run (JupyterLab autosaves) keeps the last pass
                self.refresh_saved_view()
            else:
                self._send_delta(list(self._pending_scores.values()), self._pending_outputs)
                if self._parts_stale and time.monotonic() - self._parts_at >= PARTS_INTERVAL_S:
                    self._send_parts(final=False)
            self._pending_scores, self._pending_outputs = {}, []
            if final or self._header_dirty:
                self._send_header()
                self.progress = _shown_progress(self.record, self._last_progress, self._passes)
            elif self._pending_progress is not None:
                self.progress = {**self._pending_progress, "phase": phase(self.record, self._passes)}
            self._pending_progress = None

    def _diff(self, ev) -> list | None:
        """An evaluation's answer as a word diff against the baseline; its equal and insert
        pieces join to the answer exactly (None: a log-probability run regenerates none).
        Computed once per evaluation; two very long answers are not diffed (the diff's
        cost grows with the product of their lengths): the answer is sent as it is."""
        if ev.id in self._diffs:
            return self._diffs[ev.id]
        base = self.record.baseline.output if self.record.baseline else None
        if ev.output is None:
            diff = None
        elif base is not None and len(base.split()) * len(ev.output.split()) > MAX_DIFF_WORDS_PRODUCT:
            diff = [["equal", ev.output]]
        else:
            diff = [list(op) for op in word_diff(base or "", ev.output, spacing=True)]
        if base is not None:
            self._diffs[ev.id] = diff
        return diff

    def _paint(self, row: _Shown) -> tuple[str, bool]:
        significant = live_significant(row.score, row.resolved, self._floor) if row.live else row.significant
        return paint(row.score, significant, self._top)

    def _send_delta(self, scores: list, outputs: list) -> None:
        entries = []
        for i, score, resolved, eval_id in scores:
            row = self._shown[i]
            row.score, row.resolved, row.evaluation, row.stderr, row.live = score, resolved, eval_id, None, True
            entries.append([i, round(score, 6), resolved, eval_id])
        top = rising_top(self._top, max((self._shown[e[0]].score for e in entries), default=None))
        restyle = (self._restyle or top != self._top) and bool(self._shown)  # (no spans yet: nothing to colour)
        self._top, self._restyle = top, False
        delta: dict = {}
        if restyle:  # every colour changed: send them all (rare, see rising_top)
            painted = [self._paint(row) for row in self._shown]
            delta["heat"], delta["muted"] = [p[0] for p in painted], [p[1] for p in painted]
            self.scale = legend(self._top, self.record.score_unit, self._floor, _refines(self.record))
        for entry in entries:
            entry.extend(self._paint(self._shown[entry[0]]))
        ranking = top_indices(self._shown, TOP_K) if entries else self._ranking
        if ranking != self._ranking:
            self._ranking = delta["ranking"] = ranking
        if entries or outputs or delta:
            self._seq += 1
            self.delta = {"seq": self._seq, "scores": entries, "outputs": outputs, **delta}

    def _send_checkpoint(self, *, with_outputs: bool) -> None:
        r = self.record
        by_index = {s.index: s for s in r.attribution}
        rows = []
        for i in range(len(r.spans)):
            if i in by_index:
                s = by_index[i]
                err = None if s.stderr is None else round(s.stderr, 6)
                rows.append(_Shown(i, s.score, s.resolved, s.evaluation, err, s.significant))
            elif i in self._live_scores:
                # not in the run's estimate yet (stopped before its first one):
                # keep the live score the view already showed
                _, score, resolved, eval_id = self._live_scores[i]
                rows.append(_Shown(i, score, resolved, eval_id, live=True))
            else:
                rows.append(_Shown(i))
        self._shown, self._restyle = rows, False
        self._floor = r.noise.floor if r.noise else None
        self._top = scale_top(row.score for row in rows)  # the run's own top, as every static view has it
        painted = [self._paint(row) for row in rows]
        self.scores = [None if row.score is None else round(row.score, 6) for row in rows]
        self.resolved = [row.resolved for row in rows]
        self.evals = [row.evaluation for row in rows]
        self.stderr = [row.stderr for row in rows]
        self.significant = [row.significant for row in rows]
        self.verdicts = [verdict(by_index.get(i)) for i in range(len(r.spans))]
        self.heat = [p[0] for p in painted]
        self.muted = [p[1] for p in painted]
        self._ranking = self.ranking = top_indices(rows, TOP_K)
        self.scale = legend(self._top, r.score_unit, self._floor, _refines(r))
        if with_outputs:
            self.outputs = {str(e.id): self._diff(e) for e in r.evaluations}
        self.delta = {}

    # -- any part of the answer ---------------------------------------------

    def _send_parts(self, *, final: bool) -> None:
        """The answer in its parts and, for each, the heat-map that part's own score gives,
        from the evaluations so far (no model call). A live surrogate run refits them only
        with its estimates, as its whole-answer view; the bootstrap's errors come at the end."""
        self._parts_at, self._parts_stale = time.monotonic(), False
        r = self.record
        if r is None or r.baseline is None or r.baseline.output is None:
            return
        live_surrogate = r.status == "running" and r.settings.method == "surrogate"
        if live_surrogate and not final and not r.attribution:
            return  # nothing fitted yet
        parts = parts_of(r)
        if not self.answer_parts:
            self.answer_parts, self.answer_tail = _answer_pieces(r.baseline.output, parts)
        why = can_retarget(r)
        try:
            matrix = None if why is not None or not r.evaluations else answer_matrix(r, bootstrap=None if final else 0)
        except UsageError as exc:  # a view must never stop the run it shows
            why, matrix = str(exc), None
        if matrix is None:
            self.parts_note, self.part_views, self.drives = why or "", [], []
            return
        self._drives = drives(r, matrix)
        self.parts_note = ""
        self.part_views = [
            _part_view(part_record, label=_part_label(p)) if part_record is not None
            else _unscored_view(len(r.spans), _part_label(p), matrix.unscored[p.index])
            for p, part_record in zip(matrix.parts, matrix.records, strict=True)
        ]
        self.drives = [drive_label(self._drives.get(i)) for i in range(len(r.spans))]


    def _on_focus(self, change) -> None:
        """The browser asks for a selected range of the answer: one kernel round-trip, no model call.

        Computed on a snapshot of the record taken under the lock, not while holding it: a
        surrogate's bootstrap must not hold up the live run's events meanwhile."""
        focus = change["new"] or {}
        with self._lock:
            record = None if self.record is None else self.record.model_copy(
                update={"evaluations": list(self.record.evaluations)})
        try:
            if record is None:
                raise UsageError("the run has no answer yet")
            part = retarget(record, (int(focus["start"]), int(focus["end"])))
            view = _part_view(part, label=_part_label(part.target))
        except (UsageError, KeyError, TypeError, ValueError) as exc:
            view = {"error": str(exc) if isinstance(exc, UsageError) else "not a range of the answer"}
        self.focus_view = {"seq": focus.get("seq"), **view}

    def _send_header(self) -> None:
        self._header_dirty = False
        r = self.record
        self.header = {
            "run_id": r.run_id,
            "model": r.backend.model,
            "method": estimator_label(r),
            "status": r.status,
            "reason": r.reason,
            "can_stop": self._task is not None,
            "noise_floor": r.noise.floor if r.noise else None,
            "scorer": r.scorer,
            "unit": r.score_unit,
            "target": r.target.text if r.target else None,
            "notes": run_notes(r),
        }

    # -- background mode ----------------------------------------------------

    def start(self, coro_factory) -> AttributionWidget:
        """Run `coro_factory(sink)` as a task on the running loop; Stop cancels it."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._background(coro_factory))
        self.observe(self._on_stop, names="stop_requested")
        return self

    async def _background(self, coro_factory) -> Attribution | None:
        try:
            return await coro_factory(self)
        except asyncio.CancelledError:
            return Attribution(self.record) if self.record else None

    def _on_stop(self, change) -> None:
        if change["new"] and self._task and not self._task.done():
            self._task.cancel()

    def __await__(self):
        if self._task is None:
            raise RuntimeError("this widget is not running a background attribution")
        return self._task.__await__()

    @property
    def result(self) -> Attribution | None:
        return Attribution(self.record) if self.record else None

    # -- what notebooks store -----------------------------------------------

    def _saved_body(self) -> str:
        r = self.record
        if r is None:
            return (
                "<p>prompt_attr: the run had not ended when this notebook was saved (or its kernel "
                "stopped first); <code>%attribute_runs</code> lists the saved runs and "
                "<code>%attribute_show RUN_ID</code> replays one.</p>"
            )
        again = "" if r.status == "running" else " (run the cell again for the interactive one)"
        return heatmap_html(r, drives=self._drives) + (
            f'<p style="color:#666;font-size:12px">The saved heat-map{again}; '
            f"<code>%attribute_show {safe_html_text(r.run_id)}</code> replays the run, no model calls.</p>"
        )

    def summary(self) -> str:
        """A stable one-line summary: no memory addresses, no times."""
        r = self.record
        if r is None:
            return "AttributionWidget(empty)"
        top = next(iter(r.ranked()), None)
        best = f"; top span {top.index}: {' '.join(r.spans[top.index].text.split())[:60]!r}" if top else ""
        return f"AttributionWidget({r.status}, {len(r.spans)} spans, {len(r.evaluations)} evaluations, model {r.backend.model}{best})"


def _part_view(record: RunRecord, label: str) -> dict:
    """What the heat-map draws for one part of the answer (a retargeted record): colours, noise,
    scores, ranking, legend and notes, by the rules of every view (views/scale.py)."""
    by_index = {s.index: s for s in record.attribution}
    rows = [_Shown(i, s.score, s.resolved, s.evaluation, s.stderr, s.significant) if (s := by_index.get(i))
            else _Shown(i) for i in range(len(record.spans))]
    top = scale_top(row.score for row in rows)
    painted = [paint(row.score, row.significant, top) for row in rows]
    floor = record.noise.floor if record.noise else None
    return {
        "label": label,
        "start": record.target.start,
        "end": record.target.end,
        "scores": [None if row.score is None else round(row.score, 6) for row in rows],
        "stderr": [None if row.stderr is None else round(row.stderr, 6) for row in rows],
        "resolved": [row.resolved for row in rows],
        "heat": [p[0] for p in painted],
        "muted": [p[1] for p in painted],
        "verdicts": [verdict(by_index.get(i)) for i in range(len(record.spans))],
        "ranking": top_indices(rows, TOP_K),
        "scale": legend(top, record.score_unit, floor, _refines(record)),
        "notes": run_notes(record),
    }


def _unscored_view(n_spans: int, label: str, why: str) -> dict:
    """A part nothing measured (no token of the answer covers it): every span pending, and why."""
    return {"label": label, "scores": [None] * n_spans, "stderr": [None] * n_spans, "resolved": [False] * n_spans,
            "heat": [""] * n_spans, "muted": [False] * n_spans, "verdicts": [""] * n_spans, "ranking": [], "scale": legend(MIN_TOP, None, None),
            "notes": [f"not scored: {why}"]}


def _answer_pieces(answer: str, parts) -> tuple[list[dict], str]:
    """The answer's parts with the gap before each, as the prompt's spans are sent."""
    pieces, cursor = [], 0
    for p in parts:
        pieces.append({"text": p.text, "pre": answer[cursor : p.start], "kind": p.kind})
        cursor = p.end
    return pieces, answer[cursor:]


def _part_label(part) -> str:
    """How the view names the part it explains (a Span of the answer, or a Target)."""
    return f"characters {part.start}:{part.end} of the answer: {one_line(part.text, 80)!r}"


def _span_pieces(record: RunRecord) -> tuple[list[dict], str]:
    """Span texts with the gap before each: JS never needs character offsets."""
    pieces, cursor = [], 0
    for span in record.spans:
        pieces.append({"text": span.text, "pre": record.prompt[cursor : span.start]})
        cursor = span.end
    return pieces, record.prompt[cursor:]


def _refines(record: RunRecord) -> bool:
    """Whether the run's passes may leave group shares unrefined (the legend then explains them)."""
    return record.settings.estimator(len(record.spans)) == "hierarchical"


def _shown_progress(record: RunRecord, last: dict | None, passes: int) -> dict:
    """The progress line. While running it is the engine's latest Progress (the calls so far:
    the record counts none until the run ends) with the phase; once the run has ended, the
    record's totals. Elapsed is from when the run started; the view counts on from it."""
    if record.status == "running" and last is not None:
        return {**last, "phase": phase(record, passes)}
    spend = record.spend
    elapsed = record.timings_ms.get("total_ms")
    return {
        "done": len(record.evaluations),
        "planned": len(record.evaluations) if record.status != "running" else 0,
        "calls": spend.calls,
        "cache_hits": spend.cache_hits,
        "spend_usd": spend.counted_usd,
        "spend": usd(spend.counted_usd),  # what the view shows: formatted here, as everywhere
        "elapsed_s": round(elapsed / 1000, 3) if elapsed is not None else (last or {}).get("elapsed_s", 0),
        "eta_s": None,
        "phase": phase(record, passes),
    }


class CompareWidget(_TwoOutputs):
    """Two runs side by side (front-end in js/compare.js): aligned spans coloured by
    their score in each run (one scale for both, noise uncoloured: Comparison.paints),
    the score deltas, the answer diff and what changed."""

    _esm = _asset("common.js") + _asset("compare.js")
    _css = _asset("widget.css")

    header = t.Dict().tag(sync=True)
    rows = t.List().tag(sync=True)
    answer = t.List().tag(sync=True)
    changes = t.List().tag(sync=True)

    def __init__(self, comparison=None, **kwargs):
        super().__init__(**kwargs)
        self.comparison = comparison
        if comparison is not None:
            self._fill(comparison)

    def _fill(self, c) -> None:
        from dataclasses import asdict

        with self.hold_sync():
            self.header = {
                "run_a": c.run_a, "run_b": c.run_b, "same_prompt": c.same_prompt, "same_answer": c.same_answer,
                "comparable": c.comparable_scores, "unit_a": c.unit_a, "unit_b": c.unit_b,
                "cost": c.cost_line(), "legend": c.legend(),
            }
            self.rows = [asdict(r) | {"heat_a": ha, "muted_a": ma, "heat_b": hb, "muted_b": mb}
                         for r, ((ha, ma), (hb, mb)) in zip(c.spans, c.paints(), strict=True)]
            self.answer = [list(op) for op in c.baseline_diff]
            self.changes = [[what, key, repr(a), repr(b)] for what, ch in (("config", c.config_changes),
                            ("model", c.model_changes)) for key, (a, b) in ch.items()]

    def _saved_body(self) -> str:
        return self.comparison._repr_html_() if self.comparison is not None else "<p>no comparison</p>"

    def summary(self) -> str:
        c = self.comparison
        return f"CompareWidget({c.run_a} vs {c.run_b})" if c is not None else "CompareWidget(empty)"
