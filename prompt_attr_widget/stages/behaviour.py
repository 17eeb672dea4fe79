"""The behavioural check: does deleting a significant span change what the model does?

A score says how far a deletion moves the answer's probability (or its
embedding); a reader takes "significant" to mean "this span is a cause".
The two differ: deleting the question of a prompt can halve the answer's
probability while the greedy answer still says the same thing. So the
spans above the floor are checked by generating once without them and
comparing what the model does:

* with a target: does the answer still contain it (case-insensitive)?
* without one: is the answer's language the same (its script, and for
  Latin script its commonest function words), its format (JSON, a list,
  code, headings) and its first sentence (words, case-folded)?

"changes" the answer, or moves its "probability" only. A span that only
moves the probability is no longer called significant (it keeps its score
and is shown as such); one that changes the answer stays significant.

At most `behaviour_checks` generations per run (3 by default), given to the
highest-scoring significant spans. A fact stated twice changes nothing
when either copy goes alone: when two or more checked spans move the
probability only, the last generation deletes them together, and if that
changes the answer each is a cause together with the others. When only one
does, its likeliest copy is the highest-scoring span below the floor whose
score still passes what irrelevant deletions do (the placebo bound, without
the minimum effect): deleting one copy of a fact stated twice moves the
answer's probability a little, not nothing. The two are deleted together,
and if that changes the answer both are causes together, the partner
included, though its own score stays under the floor. Significant spans
beyond the limit keep their flag, marked as not checked.

An answer a deletion already generated (the embedding scorer's) is
reused, so the check costs no call there. On a backend whose answers vary
(remote APIs), a difference the repeated baselines already show is not
counted as a change: a first sentence must differ more than theirs do, and
a language, format or target they already lose or change is no evidence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..core.schema import Evaluation, SpanScore, rank
from .score import lcs_length
from .segment import answer_parts

_WORD = re.compile(r"[^\W\d_]+")
# The commonest function words of a few languages: enough to tell one from another in an answer.
_FUNCTION_WORDS = {
    "en": "the and is of to in it that you for are with this be",
    "fr": "le la les et est un une des du de que pour dans vous je",
    "es": "el la los las y es un una de que en por para con del",
    "de": "der die das und ist ein eine nicht ich sie zu mit den dem",
    "it": "il lo la gli le e è un una di che per con del sono",
    "pt": "o a os as e é um uma de que em para com do não",
    "nl": "de het een en is van dat niet ik je op te met zijn",
}
_LEXICON = {lang: set(words.split()) for lang, words in _FUNCTION_WORDS.items()}


@dataclass(frozen=True)
class Check:
    """One generation of the check: the spans it deleted, and what the answer said."""

    dropped: tuple[int, ...]
    output: str


def contains(answer: str, text: str) -> bool:
    return text.casefold() in answer.casefold()


def language(answer: str) -> str | None:
    """The answer's script, and for Latin script its likeliest language (None: too few words)."""
    letters = [c for c in answer if c.isalpha()]
    if not letters:
        return None
    scripts = Counter(_script(c) for c in letters)
    script = scripts.most_common(1)[0][0]
    if script != "latin":
        return script
    words = [w.casefold() for w in _WORD.findall(answer)]
    hits = {lang: sum(w in lexicon for w in words) for lang, lexicon in _LEXICON.items()}
    best = max(hits, key=lambda lang: hits[lang])
    return best if hits[best] >= 2 else None


_SCRIPTS = ((0x250, "latin"), (0x370, "other"), (0x400, "greek"), (0x530, "cyrillic"), (0x590, "other"),
            (0x700, "hebrew/arabic"), (0x3040, "other"), (0x3100, "kana"), (0x4E00, "other"), (0xA000, "han"),
            (0xAC00, "other"), (0xD7B0, "hangul"))  # (end of a range of code points, its script)


def _script(c: str) -> str:
    code = ord(c)
    return next((name for end, name in _SCRIPTS if code < end), "other")


def form(answer: str) -> str:
    """The answer's format, as a reader names it: json, list, code, headings or prose."""
    text = answer.strip()
    if text[:1] in "{[" or text.startswith("```json"):
        return "json"
    kinds = {p.kind for p in answer_parts(answer)}
    for kind, name in (("code", "code"), ("list", "list"), ("heading", "headings")):
        if kind in kinds:
            return name
    return "prose"


def first_sentence(answer: str) -> tuple[str, ...]:
    parts = answer_parts(answer)
    return tuple(w.casefold() for w in _WORD.findall(parts[0].text)) if parts else ()


def sentence_change(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """How much of two first sentences differs: the share of the longer one's words outside
    their longest common subsequence (0 the same words, 1 nothing in common)."""
    longest = max(len(a), len(b))
    return 0.0 if longest == 0 else 1.0 - lcs_length(list(a), list(b)) / longest


def difference(baseline: str, answer: str, target: str | None, wobble: float = 0.0,
               varies: frozenset[str] = frozenset()) -> str | None:
    """What the answer does differently from the baseline's, or None: the same behaviour.

    `wobble` and `varies` are what answers to the unchanged prompt already show: the largest
    first-sentence change among them, and the kinds of change (language, format) they make;
    a change no larger than those is no evidence."""
    if target is not None:
        return None if contains(answer, target) or "target" in varies else "the target is gone"
    before, after = language(baseline), language(answer)
    if before and after and before != after and "language" not in varies:
        return f"the language changes ({before} to {after})"
    before, after = form(baseline), form(answer)
    if before != after and "format" not in varies:
        return f"the format changes ({before} to {after})"
    if sentence_change(first_sentence(baseline), first_sentence(answer)) > wobble:
        return "the first sentence changes"
    return None


def _unchanged_prompt(baseline: str, answers: Sequence[str], target: str | None) -> tuple[float, frozenset[str]]:
    """What repeated answers to the unchanged prompt already do differently (see `difference`)."""
    wobble = max((sentence_change(first_sentence(baseline), first_sentence(a)) for a in answers), default=0.0)
    kinds = set()
    for a in answers:
        if target is not None and not contains(a, target):
            kinds.add("target")
        found = difference(baseline, a, None, wobble=1.0)
        if found and found.startswith("the language"):
            kinds.add("language")
        elif found and found.startswith("the format"):
            kinds.add("format")
    return wobble, frozenset(kinds)


def checks_of(evaluations: Iterable[Evaluation]) -> list[Check]:
    """The behavioural observations among a run's evaluations: its checks' generations, and
    every single-span deletion that generated an answer anyway (the embedding scorer's)."""
    return [Check(tuple(e.dropped), e.output or "") for e in evaluations
            if e.purpose == "behaviour" or (e.purpose == "attribution" and len(e.dropped) == 1 and e.output is not None)]


def next_checks(scores: Sequence[SpanScore], limit: int, used: int, partner_floor: float = 0.0) -> list[tuple[int, ...]]:
    """What the check generates next, given the spans judged so far (`judge`) and `used` of
    `limit` generations spent: first the significant spans not checked yet, highest first,
    keeping one generation back when two or more are significant; then, with that one, the
    checked spans that move the probability only, deleted together (two or more), else the
    next significant span alone, else the one such span with its likeliest partner: the
    highest-scoring unflagged span scoring above `partner_floor` (see the module doc)."""
    left = limit - used
    if left <= 0:
        return []
    unchecked = [s.index for s in rank(scores) if s.significant and s.behaviour is None]
    alone = [s.index for s in scores if s.behaviour == "probability"]
    if used == 0:
        significant = sum(bool(s.significant) or s.behaviour is not None for s in scores)
        singles = left - 1 if significant >= 2 and left >= 3 else left
        return [(i,) for i in unchecked[:singles]]
    if len(alone) >= 2:
        return [tuple(sorted(alone))]
    if unchecked:
        return [(unchecked[0],)]
    partner = next((s.index for s in rank(scores) if not s.significant and s.behaviour is None
                    and s.score > partner_floor), None)
    return [tuple(sorted((alone[0], partner)))] if alone and partner is not None else []


def judge(
    scores: list[SpanScore],
    checks: Sequence[Check],
    baseline: str,
    target: str | None,
    noise_answers: Sequence[str] = (),
    limit: int = 3,
) -> list[SpanScore]:
    """The scores with each checked span's behaviour set, and `significant` cleared where the
    span moves the probability only, or set on an unflagged span whose deletion together
    with flagged ones changed the answer (a partner, see `next_checks`). Unchecked
    significant spans are marked so."""
    wobble, varies = _unchanged_prompt(baseline, noise_answers, target)

    def why(output: str) -> str | None:
        return difference(baseline, output, target, wobble, varies)

    single = {c.dropped[0]: why(c.output) for c in checks if len(c.dropped) == 1}
    together = {c.dropped: why(c.output) for c in checks if len(c.dropped) > 1}
    flagged = {s.index for s in scores if s.significant}

    def joint(i: int) -> dict | None:
        """The verdict of a deletion together with others that changed the answer, if any."""
        found = next(((d, w) for d, w in together.items() if i in d and w is not None), None)
        if found is None:
            return None
        others = ", ".join(str(j) for j in found[0] if j != i)
        return {"behaviour": "changes", "behaviour_note": f"together with span {others}: {found[1]}"}

    out = []
    for s in scores:
        if not s.significant:  # a candidate cause is a span above the floor, or the partner of one
            partnered = any(s.index in d and set(d) - {s.index} <= flagged for d in together)
            update = joint(s.index) if partnered else None
            out.append(s if update is None else s.model_copy(update={**update, "significant": True}))
            continue
        update: dict = {"behaviour": None, "behaviour_note": None}
        if s.index in single and single[s.index] is not None:
            update.update(behaviour="changes", behaviour_note=single[s.index])
        elif s.index in single:
            if (with_others := joint(s.index)) is not None:
                update.update(with_others)
            else:
                update.update(behaviour="probability", behaviour_note="the answer does the same without it",
                              significant=False)
        else:
            update["behaviour_note"] = f"not checked (at most {limit} generations)"
        out.append(s.model_copy(update=update))
    return out
