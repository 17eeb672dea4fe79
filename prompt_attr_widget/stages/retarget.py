"""Retarget: explain another part of a run's answer from its stored evaluations, with no model call.

A log-probability run keeps the log-probability of every token of the
baseline answer under every prompt it scored (TokenValues), so the score of
any part of the answer, the drop of its mean log-probability per token, is
arithmetic on stored numbers: what a run targeted at that part would have
measured with the same masks, since its requests would be the very same
(the target only chooses which tokens are averaged). An embedding or
target-overlap run keeps its ablated answers, which give the target-overlap
score of any part (the scorer a targeted run of a black-box model uses).

From those scores everything a run derives is derived again by the run's
own rules: the noise floor (its repeated baselines, scored for the part),
the estimate (leave-one-out, hierarchical shares, or the surrogate refitted
on the stored masks with its bootstrap) and the faithfulness checks, where
the deletions they need were made. A hierarchical run's passes refined the
groups its own score found hot; for another part those groups are all
there is, and the record says so (`Retargeted.refined_by_whole`).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UsageError
from ..core.schema import (
    Evaluation,
    Faithfulness,
    NoiseFloor,
    Retargeted,
    RunRecord,
    Target,
    covering,
)
from .behaviour import checks_of, judge
from .estimate import estimate
from .faithfulness import RANDOM_DRAWS, predicted, random_subsets, spearman, top_k
from .noise import noise_floor, pairwise
from .plan import random_masks
from .score import UNITS, resolve_target, target_lost
from .segment import answer_parts
from .surrogate import BOOTSTRAP


def retarget(record: RunRecord, target: str | tuple[int, int] | Target, *, bootstrap: int | None = None) -> RunRecord:
    """The run as if it had been targeted at `target` (text of the answer, or a character range).

    `bootstrap`: the surrogate's resamples (None: as a run makes them); 0 skips its standard
    errors (a live view's quick refit).
    """
    part = _resolve(_answer(record), target)
    scores = _scorer_for(record)(record, part)
    evaluations = [e if e.purpose == "behaviour" else scores.evaluation(e) for e in record.evaluations]
    noise = _noise(record, scores, evaluations)
    c, n = record.settings, len(record.spans)
    masks = random_masks(n, c.masks, c.keep_prob, c.seed) if c.method == "surrogate" else None
    attribution, fit = estimate(c.method, n, evaluations, noise, masks=masks, keep_prob=c.keep_prob, seed=c.seed,
                                bootstrap=BOOTSTRAP if bootstrap is None else bootstrap)
    checks = checks_of(evaluations)
    if checks and c.behaviour_checks > 0:  # the run's generations, judged for this part
        noise_answers = [e.output for e in evaluations if e.purpose == "noise" and e.output is not None]
        attribution = judge(attribution, checks, record.baseline.output, part.text, noise_answers,
                            c.behaviour_checks)
    checked = record.retargeted.checked if record.retargeted else record.faithfulness is not None
    checks = _faithfulness(record, evaluations, attribution) if checked else None
    return record.model_copy(update={
        "target": part,
        "scorer": scores.name,
        "score_unit": UNITS[scores.name].unit,
        "noise": noise,
        "evaluations": evaluations,
        "attribution": attribution,
        "surrogate": fit,
        "faithfulness": checks,
        "retargeted": Retargeted(
            whole=record.retargeted.whole if record.retargeted else record.target,
            scorer=_own_scorer(record),
            refined_by_whole=c.estimator(n) == "hierarchical",
            checked=checked,
            unchecked=checked and (checks is None or checks.top_k_score is None),
        ),
    })


def parts_of(record: RunRecord) -> list:
    """The baseline answer's parts (sentences, list items, lines of code) a reader may ask about."""
    return answer_parts(_answer(record))


def can_retarget(record: RunRecord) -> str | None:
    """Why no part of this run's answer can be scored from what it stored, or None if every part can."""
    try:
        _answer(record)
        _scorer_for(record)
    except UsageError as exc:
        return str(exc)
    return None


def _own_scorer(record: RunRecord) -> str:
    """The scorer the run measured with (a retargeted record's run's)."""
    return record.retargeted.scorer if record.retargeted else record.scorer


def _answer(record: RunRecord) -> str:
    if record.baseline is None or record.baseline.output is None:
        when = "yet" if record.status == "running" else "(it stopped first)"
        raise UsageError(f"run {record.run_id} has no baseline answer {when}, so no part of one to explain")
    return record.baseline.output


def _resolve(answer: str, target) -> Target:
    if isinstance(target, Target):
        target = (target.start, target.end)
    if not isinstance(target, str):
        try:
            start, end = (int(x) for x in target)
        except (TypeError, ValueError):
            raise UsageError(f"target {target!r}: give text of the answer or a (start, end) character range") from None
        if not 0 <= start < end:
            raise UsageError(f"target range {start}:{end} is empty or negative: give start < end, from 0")
        target = (start, end)
    elif not target.strip():
        raise UsageError("the target is empty: give text of the answer, or a (start, end) character range")
    return resolve_target(answer, target)


def _scorer_for(record: RunRecord):
    """How this run's stored evaluations score a part of the answer (a class below), once checked."""
    n = len(record.spans)
    if any(not 0 <= i < n for e in record.evaluations for i in e.dropped):
        raise UsageError(f"run {record.run_id}'s evaluations name spans it does not have (its run files were "
                         "edited or damaged), so parts of its answer cannot be scored from them")
    if _own_scorer(record) == "logprob":
        _check_tokens(record)
        return _LogprobPart
    missing = sum(e.output is None for e in record.evaluations)
    if missing:
        raise UsageError(f"{missing} evaluations of run {record.run_id} hold no answer, so parts of the answer "
                         "cannot be scored from them")
    return _OverlapPart


def _check_tokens(record: RunRecord) -> None:
    if record.answer_tokens is None:
        why = (f"was saved before prompt_attr kept each answer token's log-probability (run file schema "
               f"{record.schema_version})" if record.schema_version < 3 else
               "holds no record of its answer's tokens (missing or damaged in its run files)")
        raise UsageError(
            f"run {record.run_id} {why}, so other parts of its answer cannot be scored from it: "
            f"re-run it (prompt-attr rerun {record.run_id}; cached answers cost nothing) or run with --target"
        )
    lost = sum(e.tokens is None or e.tokens.values is None for e in record.evaluations if e.purpose != "behaviour")
    lost += record.answer_tokens.baseline.values is None
    if lost:
        raise UsageError(
            f"{lost} of run {record.run_id}'s scored prompts have lost their per-token log-probabilities "
            "(its logprobs.f32 is missing, cut short or changed), so other parts of its answer cannot be scored "
            f"from it: re-run it (prompt-attr rerun {record.run_id}; cached answers cost nothing)"
        )


class _LogprobPart:
    """A part scored as a log-probability run targeted at it scores it: the drop in the mean
    log-probability of the tokens covering it (core/schema.py: covering)."""

    name = "logprob"

    def __init__(self, record: RunRecord, part: Target):
        self.answer, self.part = record.answer_tokens, part
        self._chosen: dict[tuple[int, ...] | None, np.ndarray] = {}  # token choice per way of cutting the answer
        if not any(covering(self.answer.offsets, self.answer.length, part.start, part.end)):
            raise UsageError(f"no token of the answer covers characters {part.start}:{part.end} "
                             f"({part.text!r}): the model's tokens of the answer start at character "
                             f"{self.answer.offsets[0] if self.answer.offsets else self.answer.length}")
        self.base = self.point(None)

    def point(self, e: Evaluation | None) -> float:
        """The part's mean log-probability under an evaluation's prompt (None: the baseline's)."""
        tokens = self.answer.baseline if e is None else e.tokens
        key = None if tokens.offsets is None else tuple(tokens.offsets)
        if key not in self._chosen:
            offsets = self.answer.offsets if key is None else tokens.offsets
            self._chosen[key] = np.asarray(covering(offsets, self.answer.length, self.part.start, self.part.end))
        values = np.frombuffer(tokens.values, dtype="<f4")[self._chosen[key]]
        return float(values.astype(np.float64).mean())

    def evaluation(self, e: Evaluation) -> Evaluation:
        value = self.point(e)
        return e.model_copy(update={"score": self.base - value, "target_logprob": value})

    @staticmethod
    def distance(a: float, b: float) -> float:
        return abs(a - b)


class _OverlapPart:
    """A part scored from the stored answers, as a targeted run of a black-box model scores
    it: the share of its words lost from the answer (stages/score.py: target_lost)."""

    name = "target_overlap"

    def __init__(self, record: RunRecord, part: Target):
        self.baseline, self.text = record.baseline.output, part.text

    def point(self, e: Evaluation | None) -> str:
        return self.baseline if e is None else e.output

    def evaluation(self, e: Evaluation) -> Evaluation:
        return e.model_copy(update={"score": target_lost(self.text, e.output), "cosine": None, "target_logprob": None})

    def distance(self, a: str, b: str) -> float:
        return abs(target_lost(self.text, a) - target_lost(self.text, b))


def _noise(record: RunRecord, scores, evaluations: list[Evaluation]) -> NoiseFloor | None:
    """The noise floor of the part: its score between every two answers to the unchanged prompt
    and its placebo deletions' bound, never below the smallest effect worth reporting (the
    run's own, in the run's own unit)."""
    if record.noise is None:
        return None
    repeats = sorted((e for e in record.evaluations if e.purpose == "noise"), key=lambda e: e.repeat)
    samples = pairwise([scores.point(None), *map(scores.point, repeats)], scores.distance)
    configured = record.settings.min_effect
    if scores.name == record.scorer:
        min_effect = record.noise.min_effect
    else:
        min_effect = configured if configured is not None else UNITS[scores.name].min_effect
    placebo = sorted((e for e in evaluations if e.purpose == "placebo"), key=lambda e: e.repeat)
    return noise_floor(samples, record.noise.repeats, min_effect, [e.score for e in placebo])


def _faithfulness(record: RunRecord, evaluations: list[Evaluation], attribution) -> Faithfulness | None:
    """The run's checks for the part, each where the deletions it needs were made: the top-k
    deletion (its top spans deleted together) and, with faithfulness "full", the LDS on the
    held-out masks (the same for every part); None when neither can be scored."""
    c, n = record.settings, len(record.spans)
    if not attribution:
        return None
    found: dict[tuple[int, ...], Evaluation] = {}
    for e in evaluations:
        if e.purpose in ("faithfulness", "heldout"):
            found.setdefault(tuple(e.dropped), e)
    for e in evaluations:
        if e.purpose == "attribution":
            found[tuple(e.dropped)] = e
    top = tuple(top_k(attribution, n))
    randoms = random_subsets(n, len(top), RANDOM_DRAWS.get(c.faithfulness, 0), c.seed + 2)
    heldout = random_masks(n, c.heldout_masks, c.keep_prob, c.seed + 3) if c.faithfulness == "full" else []
    lds = None
    if heldout and all(m in found for m in heldout):
        by_span = {s.index: s.score for s in attribution}
        lds = spearman(predicted(heldout, by_span), [found[m].score for m in heldout])
    deleted = all(m in found for m in (top, *randoms))
    if not deleted and lds is None:
        return None  # this part's top spans were never deleted together in the run, nor held-out masks
    return Faithfulness(k=len(top), top_k=list(top), top_k_score=found[top].score if deleted else None,
                        random_scores=[found[m].score for m in randoms] if deleted else [], lds=lds,
                        heldout=len(heldout) if lds is not None else 0)
