"""How a score is shown: the one heat scale, the noise rule, the ranking, the notes.

Every view (static HTML, terminal, export, both widgets) takes its colours
and its significance from here; the JavaScript receives the CSS colours
and the noise flags it draws (`paint`) and the legend's texts (`legend`)
instead of computing them, so no two views can disagree.

Noise is never shown as signal: a span whose score is not above the run's
noise floor (`significant is False`) gets no heat colour anywhere, and
every rendering states the estimator, the scorer's unit, the floor and the
faithfulness check, so a reader knows how sure the run is.
"""

from __future__ import annotations

import math
from collections import Counter

from ..core.schema import RunRecord, SpanScore, rank

HEAT_RGB = (220, 38, 38)  # the heat colour: red, from pale (low score) to strong (the run's top)
MIN_TOP = 0.05  # the scale's top is at least this, so a run of tiny scores stays pale
ROUND_STEPS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)  # a live scale's top rises to one of these x 10^k


def scale_max(record: RunRecord) -> float:
    """The colour scale's top: the run's highest score (at least MIN_TOP, so noise stays pale)."""
    return scale_top(s.score for s in record.attribution)


def scale_top(scores) -> float:
    """The top of a scale shared by these scores (a run, or both runs of a comparison)."""
    return max([MIN_TOP, *(s for s in scores if s is not None)])


def level(score: float | None, significant: bool | None, top: float) -> float | None:
    """Colour intensity 0-1 of a span, or None for no colour (unmeasured, or noise)."""
    if score is None or significant is False:
        return None
    return max(0.0, min(1.0, score / top))


def heat(s: SpanScore | None, top: float) -> float | None:
    """`level` of a span's score."""
    return None if s is None else level(s.score, s.significant, top)


def heat_css(intensity: float | None) -> str:
    """The CSS background of a level: '' (no colour) for None."""
    if intensity is None:
        return ""
    return f"rgba({','.join(map(str, HEAT_RGB))},{0.08 + 0.62 * intensity:.3f})"


def paint(score: float | None, significant: bool | None, top: float) -> tuple[str, bool]:
    """What a view draws for a span: its CSS background ('' for none) and whether it is
    noise (muted: no colour, and labelled as below the floor)."""
    return heat_css(level(score, significant, top)), significant is False


def live_significant(score: float | None, resolved: bool, floor: float | None) -> bool | None:
    """A live score before the run's next estimate: noise when a span measured on its own
    scores no more than the floor (the rule stages/noise.py applies), else not assessed yet."""
    if score is not None and resolved and floor is not None and score <= floor:
        return False
    return None


def rising_top(top: float, highest: float | None) -> float:
    """A live view's scale top once a score of `highest` is shown: kept while it covers the
    score, else raised to the next round step above it (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8
    x 10^k). A raise re-colours every span, so it must be rare: scores that keep climbing
    raise it a few times per decade instead of once per evaluation, and the bytes a live
    view is sent stay linear in the evaluations."""
    if highest is None or not math.isfinite(highest) or highest <= top:
        return top
    exponent = math.floor(math.log10(highest))
    return next(v for k in (exponent, exponent + 1) for m in ROUND_STEPS if (v := float(f"{m}e{k}")) >= highest)


def top_indices(rows, k: int = 5) -> list[int]:
    """The indices of the k most influential scored rows (anything with .score and .index), by `rank`."""
    return [r.index for r in rank(r for r in rows if r.score is not None)[:k]]


def legend(top: float, unit: str | None, floor: float | None, unrefined: bool = False) -> dict:
    """The heat legend's texts and its two end colours, for the widgets (see `legend_note`)."""
    note = legend_note(floor, unrefined)
    return {
        "top": top,
        "low": "score 0",
        "high": f"{top:.3f}{f' {unit}' if unit else ''}",
        "note": f" · {note}" if note else "",
        "colours": [heat_css(0.0), heat_css(1.0)],
    }


def legend_note(floor: float | None, unrefined: bool, marker: str = "dotted underline") -> str:
    """What the colours leave out and what `marker` means, in every view's own marks.

    Only a span measured on its own is judged against the noise floor: the
    share of a group a hierarchical pass did not refine is coloured by its
    share, however small, and marked (`marker`: a dotted underline in the
    widget and the static HTML, `*` in tables), so "uncoloured" is never
    read as "every pale span is above the floor".
    """
    parts = [] if floor is None else [f"uncoloured: below the noise floor {floor:.3f} (spans measured alone), "
                                      "or moving the answer's probability only"]
    if unrefined:
        parts.append(f"{marker}: a share of a group the hierarchical pass did not refine "
                     "(not measured alone, so never judged noise)")
    return " · ".join(parts)


def unrefined(record: RunRecord) -> bool:
    """Whether some span's score is the share of a group that was not refined."""
    return any(not s.resolved for s in record.attribution)


def plus_minus(s: SpanScore) -> str:
    return "" if s.stderr is None else f" ± {s.stderr:.3f}"


def signal(s: SpanScore) -> str:
    """The significance column: changes the answer, moves its probability only, above the
    floor (behaviour not checked), noise, or not assessed."""
    if s.behaviour == "changes":
        return "changes"
    if s.behaviour == "probability":
        return "prob. only"
    return {True: "yes", False: "noise", None: "-"}[s.significant]


def verdict(s: SpanScore | None) -> str:
    """What a span's flag means, in the words every view shows next to its score ('' for a
    span not assessed): the one place the behavioural check is put into words."""
    if s is None:
        return ""
    if s.behaviour == "probability":
        return "moves its probability only: the answer does the same without it"
    if s.behaviour == "changes":
        return f"changes the answer: {s.behaviour_note}"
    if s.significant is False:
        return "below the noise floor"
    if s.significant:
        return "above the noise floor; " + (s.behaviour_note or "behaviour not checked")
    return ""


def estimator_label(record: RunRecord) -> str:
    """The estimator a run really used, as its title names it (a hierarchical run of a
    few spans is leave-one-out, and its notes say why)."""
    estimator = record.settings.estimator(len(record.spans))
    return "leave-one-out" if estimator == "loo" else estimator


def run_notes(record: RunRecord) -> list[str]:
    """How the run measured and how sure it is, one short sentence each."""
    c = record.settings
    method = c.method
    fit = record.surrogate
    estimator = c.estimator(len(record.spans))
    if estimator == "surrogate" and fit:
        r2 = "n/a" if fit.r2 is None else f"{fit.r2:.2f}"
        notes = [f"estimator: surrogate (LASSO on {fit.masks} random masks, R² {r2}, ± = bootstrap s.e.)"]
    elif estimator == "surrogate":
        notes = ["estimator: surrogate (stopped before it was fitted: no scores)"]
    elif estimator == "loo":
        few = "" if method == "loo" else " (too few spans for hierarchical passes)"
        notes = [f"estimator: {estimator_label(record)}{few}"]  # the name the title shows
    else:
        notes = [f"estimator: hierarchical (refine threshold {c.refine_threshold:g})"]
    target = f" of the target {record.target.text!r}" if record.target else ""
    notes.append(f"score: {record.score_unit}{target}")
    if record.retargeted:
        notes.extend(retarget_notes(record))
    if record.noise:
        notes.extend(noise_notes(record))
    f = record.faithfulness
    if f and f.top_k_score is not None:
        rand = f"{sum(f.random_scores) / len(f.random_scores):.3f}" if f.random_scores else "n/a"
        line = f"check: deleting the top {f.k} together scores {f.top_k_score:.3f}; {f.k} random spans {rand}"
        if f.lds is not None:
            line += f"; LDS {f.lds:.2f} on {f.heldout} held-out masks"
        if f.random_scores and sum(f.random_scores) / len(f.random_scores) >= f.top_k_score:
            line += (
                f". The check FAILED: deleting {f.k} random spans moved the answer as much as deleting the top "
                f"{f.k}, so do not trust the ranking (its scores may be noise, or spans matter only together)"
            )
        notes.append(line)
    if record.retargeted and record.retargeted.unchecked:
        lds = f"; LDS {f.lds:.2f} on {f.heldout} held-out masks" if f and f.lds is not None else ""
        notes.append("check: the top-k deletion is not measured for this part (its top spans were never deleted "
                     f"together in the run; a run with --target measures it){lds}")
    if record.redacted:
        notes.append(redaction_note(record))
    return notes


def noise_notes(record: RunRecord) -> list[str]:
    """The floor, what it comes from, and what the behavioural check found."""
    n = record.noise
    sources = []
    if n.samples:
        sources.append(f"largest gap between {n.repeats} answers to the unchanged prompt")
    if n.calibrated is not None:
        sources.append(f"{len(n.placebo)} placebo deletions: {n.fpr:.0%} of irrelevant deletions pass "
                       f"{n.calibrated:.3f}")
    source = "; ".join(sources) or "deterministic backend, no placebo deletions"
    above = sum(s.significant is not None and s.score > n.floor and (s.significant or s.behaviour is not None)
                for s in record.attribution)
    notes = [f"noise floor {n.floor:.3f} ({source}; minimum effect {n.min_effect:g}): "
             f"{above} of {len(record.spans)} spans above it"]
    changes = sum(s.behaviour == "changes" for s in record.attribution)
    only = sum(s.behaviour == "probability" for s in record.attribution)
    unchecked = sum(bool(s.significant) and s.behaviour is None for s in record.attribution)
    if changes or only:
        text = f"behaviour: {changes} change{'s' if changes == 1 else ''} the answer when deleted"
        if only:
            text += f", {only} move{'s' if only == 1 else ''} its probability only (not significant)"
        if unchecked:
            text += f", {unchecked} above the floor not checked"
        notes.append(text)
    return notes


def retarget_notes(record: RunRecord) -> list[str]:
    """What a view of another part of the answer is: computed, not measured, and what that leaves out."""
    r = record.retargeted
    whole = "the whole answer" if r.whole is None else f"the target {r.whole.text!r}"
    notes = [f"this part ({record.target.start}:{record.target.end} of the answer) is scored from run "
             f"{record.run_id}'s stored evaluations, no model call; the run itself scored {whole}"]
    if r.scorer != record.scorer:
        notes.append(f"scored by the target overlap of the stored answers (the run measured {r.scorer})")
    if r.refined_by_whole:
        notes.append(f"hierarchical: the passes refined the groups that {whole} found hot, so a span of a group "
                     "they did not refine shares its group's score here (a run with --target refines for this part)")
    return notes


def phase(record: RunRecord | None, passes_done: int = 0) -> str:
    """What a live run is doing, as a person reads it: "baseline", "pass 2 of ~3", "faithfulness checks".

    `passes_done`: the estimates seen so far (each pass ends with one). The
    number of hierarchical passes is only known at the end: "~" is the usual
    depth of refining n spans by `group_fraction`, raised when a run goes deeper.
    """
    if record is None:
        return "starting"
    if record.status != "running":
        return record.status
    if record.baseline is None:
        return "baseline"
    if record.noise is None:
        return "noise floor"
    if any(e.purpose in ("faithfulness", "heldout") for e in record.evaluations):
        return "faithfulness checks"
    c, n = record.settings, len(record.spans)
    estimator = c.estimator(n)
    if estimator != "hierarchical":
        return {"loo": "leave-one-out", "surrogate": "random masks"}[estimator]
    current = passes_done + 1
    expected = max(current, math.ceil(math.log(max(n, 2)) / math.log(1 / c.group_fraction)))
    return f"pass {current} of ~{expected}"


def redaction_note(record: RunRecord) -> str:
    """What --redact masked, by kind (never the secrets), and what that costs."""
    calls = [c for c in [record.baseline, *record.evaluations] if c is not None]
    kinds = Counter(r.kind for r in [*record.redactions, *(r for c in calls for r in c.redactions)])
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none found"
    return f"redacted: secrets masked in the stored run ({found}); not reproducible from the stored prompt"
