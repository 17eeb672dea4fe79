"""Helpers shared by the test folders: segmentation invariants, a RunRecord factory, displayed outputs.

`make_record` builds a finished run record from a prompt and the scores
wanted, without a model, an engine or a disk, so views and the store can be
tested on exactly the record a case needs (a span below the noise floor, a
hostile text, an aborted run).
"""

from __future__ import annotations

from collections.abc import Sequence

from prompt_attr_widget.core.config import AttributionConfig
from prompt_attr_widget.core.identity import prompt_sha256
from prompt_attr_widget.core.schema import (
    BackendRecord,
    Call,
    Evaluation,
    NoiseFloor,
    RunRecord,
    SpanScore,
    Spend,
)
from prompt_attr_widget.stages.segment import segment

RUN_ID = "20261203T101500123Z-1a2b3c4d"


def check_spans(prompt: str, spans) -> None:
    """The invariants every segmentation must keep."""
    assert spans, "no spans"
    prev_end = 0
    for i, s in enumerate(spans):
        assert s.index == i
        assert prompt[s.start : s.end] == s.text
        assert s.text, "empty span"
        assert not s.text[0].isspace() and not s.text[-1].isspace(), repr(s.text)
        assert s.start >= prev_end, "spans overlap or are out of order"
        prev_end = s.end


def make_record(
    prompt: str = "The sky is blue. Paris is in France. Answer in French.",
    scores: Sequence[float | None] | None = None,
    *,
    significant: Sequence[bool | None] | None = None,
    stderr: Sequence[float | None] | None = None,
    noise_floor: float | None = 0.1,
    baseline: str = "Paris est en France.",
    outputs: Sequence[str | None] | None = None,
    run_id: str = RUN_ID,
    status: str = "finished",
    reason: str | None = None,
    scorer: str = "embedding",
    score_unit: str = "embedding distance (0-1)",
    spend_usd: float | None = 0.0,
    level: str = "sentence",
    **options,
) -> RunRecord:
    """A run record of `prompt` (segmented at `level`) with these leave-one-out scores.

    A score of None leaves its span unmeasured. `significant` defaults to
    "above `noise_floor`" when a floor is given. Each measured span gets one
    evaluation deleting it alone, answering `outputs[i]` (default: the
    baseline with the span's index appended).
    """
    config = AttributionConfig.build(model="fake", method="loo", segment=level, **options)
    spans = segment(prompt, level)
    scores = list(scores if scores is not None else [0.5 / (i + 1) for i in range(len(spans))])
    assert len(scores) == len(spans), f"{len(spans)} spans, {len(scores)} scores"
    if significant is None:
        significant = [None if s is None or noise_floor is None else s > noise_floor for s in scores]
    evaluations, attribution = [], []
    for i, score in enumerate(scores):
        if score is None:
            continue
        output = outputs[i] if outputs is not None else f"{baseline} ({i})"
        evaluations.append(Evaluation(output=output, id=len(evaluations), round=0, dropped=[i], score=score))
        attribution.append(SpanScore(
            index=i, score=score, group=(i, i + 1), evaluation=evaluations[-1].id,
            stderr=None if stderr is None else stderr[i], significant=significant[i],
        ))
    return RunRecord(
        run_id=run_id,
        status=status,
        reason=reason,
        created_at="2026-12-03T10:15:00.123+00:00",
        finished_at=None if status == "running" else "2026-12-03T10:15:01.456+00:00",
        library_version="test",
        prompt=prompt,
        prompt_sha256=prompt_sha256(prompt, config, spans),
        config=config.model_dump(mode="json"),
        backend=BackendRecord(backend="fake", model="fake", embed_model="fake-embed"),
        spans=spans,
        scorer=scorer,
        score_unit=score_unit,
        noise=None if noise_floor is None else NoiseFloor(repeats=1, min_effect=noise_floor, floor=noise_floor),
        baseline=Call(output=baseline),
        evaluations=evaluations,
        attribution=attribution,
        spend=Spend(usd=spend_usd, calls=len(evaluations) + 1),
        timings_ms={"total_ms": 1234.0},
    )


def displayed(obj) -> list[dict]:
    """The outputs `display(obj)` leaves in a notebook, in order (each a mime bundle)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output() as captured:
        display(obj)
    return [o.data for o in captured.outputs]
