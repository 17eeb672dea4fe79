"""Faithfulness benchmark: do attribution methods find planted culprits?

Each item of `items.json` is a short prompt, one span per line, whose
answer contains a `target` text *because of* known culprit lines (a planted
fact, a language / format instruction, a persona, a fact stated twice), or,
for `null` items, regardless of any single line. `validate.py` first checks
that causally on the greedy local model; only valid items are scored.

For every valid item each method attributes the target on the local model
(`segment="line"`, `faithfulness="off"`, `cache=False` so calls and wall
time are honest, seed 42): `loo`, `hierarchical`, `surrogate` with 16, 32
and 64 masks, and a `random` baseline (seeded random scores, 0 calls).
Metrics, averaged over the valid planted-culprit items (all but null):

* Hit@1: the top-scored span is a culprit (ties at the top count
  fractionally: the chance a random tie-break picks a culprit);
* MRR: mean 1/rank of the best-ranked culprit (ties get their average rank);
* top-k del. (norm.): k = number of culprits; the score of deleting the
  method's top-k spans together, minus the mean score of 8 seeded random
  k-subsets, over (oracle - random) where oracle deletes the culprits;
  items with oracle - random <= 0 are skipped (and counted);
* LDS: Spearman correlation, on 32 held-out random keep-masks per item
  (keep prob 0.5, seed 4242, the same masks for every method), between the
  actual score and the sum of the method's scores over the deleted spans
  (+ the surrogate's intercept);
* calls / wall s: mean model calls (`record.spend.calls`) and seconds per item;
* null clean: the share of null items where no span is flagged significant;
* twice top-2: the share of stated_twice items with both copies in the top 2.

`answer_part` items plant ONE sentence of a longer answer (several sentences,
the rest driven by other lines or generic). An untargeted run scores the
whole answer, where the planted sentence is a small share of the tokens, so
it may rank another line first. For these items each method also runs
untargeted, and two more Hit@1 are reported over them:

* Hit@1 untargeted: the ranking of the untargeted run (score = drop of the
  whole answer's mean log-prob per token);
* Hit@1 sentence: the ranking of `untargeted.for_target((start, end))`, the
  answer sentence (`answer_sentences()`) holding the target's first
  occurrence (case-insensitive; the range over every sentence it touches),
  re-scored from the run's stored per-token log-probs with no model call.

Answers are `validate.max_tokens(item)` tokens long (48, and 96 for
`answer_part` items), in validation and in every run alike.

Deletion scores come from `prompt_attr.score_deletions` (the runs' scorer:
drop of the target's mean log-prob per token) with the call cache on, kept
in a private folder. Run:

    python benchmarks/faithfulness/run.py [--quick] [--out results.json]
    python benchmarks/faithfulness/run.py --kinds answer_part --out benchmarks/faithfulness/results_answer_part.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

# One BLAS thread: idle OpenBLAS workers spin after each fit and take CPU from
# the model's own thread on a small machine. Set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate as validation  # noqa: E402  (a sibling script, not a package)

SEED = 42  # the attribution runs' seed
HELDOUT_SEED = 4242  # LDS masks: a different seed from the runs'
HELDOUT_MASKS = 32
RANDOM_DRAWS = 8
MAX_TOKENS = validation.MAX_TOKENS
DEFAULT = "default"  # the library's own defaults: what a user gets without choosing
METHODS: dict[str, dict | None] = {
    DEFAULT: {},
    "loo": {"method": "loo"},
    "hierarchical": {"method": "hierarchical"},
    "surrogate-16": {"method": "surrogate", "masks": 16},
    "surrogate-32": {"method": "surrogate", "masks": 32},
    "surrogate-64": {"method": "surrogate", "masks": 64},
    "random": None,
}
QUICK_PER_KIND = 1  # --quick: the first valid item of each kind
HELDOUT_PLACEBOS = range(100, 108)  # placebo copies no run uses (runs use 0..null_samples-1)
segment_of = validation.segment_of


# --------------------------------------------------------------------------- ranking


def ranks(scores: list[float]) -> list[float]:
    """1-based rank of each span by score (highest first); ties share their average rank."""
    arr = np.asarray(scores, dtype=float)
    out = []
    for s in arr:
        above, tied = int((arr > s).sum()), int((arr == s).sum())
        out.append(above + (tied + 1) / 2)
    return out


def hit_at_1(scores: list[float], culprits: list[int]) -> float:
    """Whether the top span is a culprit; a tie at the top counts the culprits' share of it."""
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s == top]
    return sum(i in culprits for i in tied) / len(tied)


def reciprocal_rank(scores: list[float], culprits: list[int]) -> float:
    r = ranks(scores)
    return 1.0 / min(r[c] for c in culprits)


def top_k(scores: list[float], k: int) -> list[int]:
    """The k top spans, ties broken by position as the library's own top-k does."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


def both_in_top2(scores: list[float], culprits: list[int]) -> bool:
    return set(top_k(scores, 2)) == set(culprits)


def random_subsets(n: int, k: int, draws: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(n, size=k, replace=False).tolist()) for _ in range(draws)]


def heldout_masks(n: int, count: int, seed: int) -> list[list[int]]:
    """Deleted spans of `count` random keep-masks (keep prob 0.5), the library's own plan."""
    from prompt_attr_widget.stages.plan import random_masks

    return [list(m) for m in random_masks(n, count, 0.5, seed)]


def spearman(a, b) -> float | None:
    from prompt_attr_widget.stages.faithfulness import spearman as lib_spearman

    return lib_spearman(list(a), list(b))


# --------------------------------------------------------------------------- runs


def run_method(item: dict, name: str, options: dict | None, runs_dir: Path, n: int, index: int, backend) -> dict:
    """One attribution of one item's target; the per-item record the metrics are computed from."""
    return _attribution_run(item, name, options, runs_dir, n, index, backend, item["target"])[0]


def _attribution_run(item, name, options, runs_dir, n, index, backend, target):
    """(the record, the Attribution or None): `target=None` explains the whole answer."""
    if options is None:  # the random baseline: seeded scores, no model
        rng = np.random.default_rng(1000 + index)
        scores = rng.random(n).tolist()
        return {"method": name, "status": "finished", "scores": scores, "significant": [None] * n,
                "calls": 0, "wall_s": 0.0, "intercept": 0.0}, None
    import prompt_attr

    t = time.perf_counter()
    try:
        a = prompt_attr.attribute(
            item["prompt"], model="local", system=item.get("system"), target=target,
            segment=segment_of(item), faithfulness="off", cache=False, runs_dir=str(runs_dir),
            seed=SEED, max_tokens=validation.max_tokens(item), backend=backend, **options,
        )
    except Exception as exc:  # noqa: BLE001 - a crash of one run is a result, not the end of the benchmark
        return {"method": name, "status": "error", "reason": f"{type(exc).__name__}: {exc}",
                "wall_s": round(time.perf_counter() - t, 3), "calls": None, "scores": None}, None
    wall = time.perf_counter() - t
    rec = a.record
    by_index = {s.index: s for s in rec.attribution}
    complete = rec.status == "finished" and len(by_index) == n
    out = {
        "method": name,
        "status": rec.status if complete or rec.status != "finished" else "incomplete",
        "reason": rec.reason,
        "run_id": rec.run_id,
        "baseline": rec.baseline.output if rec.baseline else None,
        "target": rec.target.model_dump() if rec.target else None,
        "scorer": rec.scorer,
        "scores": [by_index[i].score for i in range(n)] if complete else None,
        "significant": [by_index[i].significant for i in range(n)] if complete else None,
        "stderr": [by_index[i].stderr for i in range(n)] if complete else None,
        "noise_floor": rec.noise.floor if rec.noise else None,
        "noise": rec.noise.model_dump() if rec.noise else None,
        "behaviour": [by_index[i].behaviour for i in range(n)] if complete else None,
        "behaviour_note": [by_index[i].behaviour_note for i in range(n)] if complete else None,
        "passes": len({e.round for e in rec.evaluations if e.purpose == "attribution"}),
        "placebo_calls": sum(e.purpose == "placebo" for e in rec.evaluations),
        "behaviour_calls": sum(e.purpose == "behaviour" for e in rec.evaluations),
        "calls": rec.spend.calls,
        "cache_hits": rec.spend.cache_hits,
        "wall_s": round(wall, 3),
        "total_ms": rec.timings_ms.get("total_ms"),
        "intercept": rec.surrogate.intercept if rec.surrogate else 0.0,
        "surrogate": rec.surrogate.model_dump() if rec.surrogate else None,
    }
    return out, a


def target_sentence(sentences, answer: str, target: str) -> tuple[int, int] | None:
    """The character range of the answer sentence(s) holding the target's first occurrence
    (case-insensitive, as validation finds it): what a reader of an untargeted run points at
    to ask why the answer says the target. A target over two sentences gets both."""
    found = re.search(re.escape(target), answer, re.IGNORECASE)
    if not found:
        return None
    touched = [s for s in sentences if s.start < found.end() and s.end > found.start()]
    return (touched[0].start, touched[-1].end) if touched else None


def run_untargeted(item: dict, name: str, options: dict | None, runs_dir: Path, n: int, index: int,
                   backend, targeted: dict) -> dict:
    """An answer_part item's method run without a target, then re-scored on the target's sentence.

    The untargeted ranking explains the whole answer, the planted sentence diluted among the
    rest; `for_target` re-scores that sentence from the run's stored per-token log-probs, with
    no model call. Their Hit@1, next to the targeted run's, tell what scoring one part buys.
    A run that fails counts as a miss; `hit1_sentence` is left out while the library lacks
    `for_target`, so the table shows it as not measured rather than as a miss.
    """
    culprits = item["culprits"]
    if options is None:  # random scores do not depend on what is explained
        scores = targeted["scores"]
        return {"method": name, "status": "finished", "scores": scores, "calls": 0, "wall_s": 0.0,
                "hit1": hit_at_1(scores, culprits), "sentence_scores": scores,
                "hit1_sentence": hit_at_1(scores, culprits)}
    out, a = _attribution_run(item, name, options, runs_dir, n, index, backend, None)
    if out["scores"] is None:
        return out
    out["hit1"] = hit_at_1(out["scores"], culprits)
    out["same_baseline"] = out["baseline"] == targeted.get("baseline")
    if not (hasattr(a, "for_target") and hasattr(a, "answer_sentences")):
        out["sentence_error"] = "Attribution.for_target / answer_sentences are not in this version of the library"
        return out
    t = time.perf_counter()
    try:
        where = target_sentence(a.answer_sentences(), a.baseline, item["target"])
        if where is None:
            raise ValueError(f"no answer sentence holds the target {item['target']!r}")
        part = a.for_target(where)
        scores = [s.score for s in part.spans]
    except Exception as exc:  # noqa: BLE001 - a failed re-scoring is a miss, not the end of the benchmark
        out.update(sentence_error=f"{type(exc).__name__}: {exc}", hit1_sentence=0.0)
        return out
    complete = len(scores) == n and None not in scores
    out.update(
        sentence={"start": where[0], "end": where[1], "text": a.baseline[where[0]:where[1]]},
        sentence_s=round(time.perf_counter() - t, 4),
        sentence_scores=scores,
        hit1_sentence=hit_at_1(scores, culprits) if complete else 0.0,
    )
    return out


def score_item(item: dict, index: int, runs_dir: Path, methods: dict, backend, echo=print,
               heldout_count: int = HELDOUT_MASKS) -> dict:
    """Every method on one item, then the deletion checks (one batched score_deletions call)."""
    import prompt_attr

    spans = prompt_attr.segment(item["prompt"], segment_of(item))
    n, culprits = len(spans), sorted(item["culprits"])
    result = {"id": item["id"], "kind": item["kind"], "hard": bool(item.get("hard")), "n_spans": n,
              "culprits": culprits,
              "target": item["target"], "max_tokens": validation.max_tokens(item), "runs": {}}
    for name, options in methods.items():
        r = run_method(item, name, options, runs_dir, n, index, backend)
        result["runs"][name] = r
        if r["status"] != "finished":
            echo(f"    ! {item['id']} {name}: {r['status']} ({r.get('reason')})")
    if item["kind"] == "answer_part":
        for name, options in methods.items():
            u = run_untargeted(item, name, options, runs_dir, n, index, backend, result["runs"][name])
            result["runs"][name]["untargeted"] = u
            if u["status"] != "finished" or "sentence_error" in u:
                echo(f"    ! {item['id']} {name} untargeted: {u['status']} "
                     f"({u.get('reason') or u.get('sentence_error')})")

    _significance_checks(item, result, spans, backend)

    # Deletions: oracle (the culprits), random k-subsets, each method's top-k, held-out masks.
    k = max(1, len(culprits))
    randoms = random_subsets(n, k, RANDOM_DRAWS, HELDOUT_SEED + 1 + index)
    heldout = heldout_masks(n, heldout_count, HELDOUT_SEED) if heldout_count else []
    tops = {name: top_k(r["scores"], k) for name, r in result["runs"].items() if r["scores"] is not None}
    wanted: list[list[int]] = []
    for d in ([culprits] if culprits else []) + randoms + list(tops.values()) + heldout:
        if d not in wanted:
            wanted.append(d)
    # The engine's own order (descending keep-mask): consecutive prompts share long
    # prefixes, whose KV cache llama.cpp reuses.
    wanted.sort(key=lambda d: (*d, n), reverse=True)
    t = time.perf_counter()
    try:
        scored = prompt_attr.score_deletions(
            item["prompt"], wanted, model="local", system=item.get("system"), target=item["target"],
            segment=segment_of(item), cache=True, max_tokens=validation.max_tokens(item), seed=SEED, backend=backend,
        )
    except Exception as exc:  # noqa: BLE001 - e.g. the target is missing from the baseline
        result["deletion_error"] = f"{type(exc).__name__}: {exc}"
        echo(f"    ! {item['id']} deletions: {result['deletion_error']}")
        for r in result["runs"].values():  # the rankings need no deletions
            if r["scores"] is not None:
                r["any_significant"] = any(bool(s) for s in r["significant"])
                if culprits:
                    r["hit1"], r["rr"] = hit_at_1(r["scores"], culprits), reciprocal_rank(r["scores"], culprits)
        return result
    result["deletion_s"] = round(time.perf_counter() - t, 3)
    score_of = {tuple(d): s for d, s in zip(wanted, scored, strict=True)}
    oracle = score_of[tuple(culprits)] if culprits else None
    random_mean = statistics.fmean(score_of[tuple(d)] for d in randoms)
    actual = [score_of[tuple(m)] for m in heldout]
    result.update(oracle_score=oracle, random_scores=[score_of[tuple(d)] for d in randoms],
                  random_mean=random_mean, heldout=heldout, heldout_scores=actual)

    for name, r in result["runs"].items():
        if r["scores"] is None:
            continue
        r["any_significant"] = any(bool(s) for s in r["significant"])
        scores = r["scores"]
        pred = [(r.get("intercept") or 0.0) + sum(scores[i] for i in m) for m in heldout]
        r["lds"] = spearman(pred, actual)
        r["top_k"] = tops[name]
        r["top_k_score"] = score_of[tuple(tops[name])]
        if culprits:
            r["hit1"] = hit_at_1(scores, culprits)
            r["rr"] = reciprocal_rank(scores, culprits)
            span_ = oracle - random_mean
            r["topk_norm"] = (r["top_k_score"] - random_mean) / span_ if span_ > 0 else None
            if item["kind"] == "stated_twice":
                r["twice_top2"] = both_in_top2(scores, culprits)
    return result


def _significance_checks(item: dict, result: dict, spans, backend) -> None:
    """What tells whether "significant" means what it says, for every method's run of the item:

    * held-out placebos: copies of the prompt with a neutral sentence no run used
      (`HELDOUT_PLACEBOS`), scored as the runs score; `placebo_fpr` is the share whose
      score's magnitude passes a run's floor (the calibrated null states 5%);
    * causes: every flagged span that is not a planted culprit is deleted alone and the
      greedy answer checked for the target (`causes`: those whose deletion loses it, so a
      flag there is right about the answer even if no culprit was planted in it).
    """
    import asyncio

    from prompt_attr_widget.backends.base import GenerationParams
    from prompt_attr_widget.engine.plan import messages_for
    from prompt_attr_widget.stages.noise import placebo_prompt
    from prompt_attr_widget.stages.segment import render

    runs = [r for r in result["runs"].values() if r.get("scores") is not None and r.get("baseline")]
    if not runs or runs[0].get("target") is None:
        return
    answer, target = runs[0]["baseline"], runs[0]["target"]
    system, prompt = item.get("system"), item["prompt"]

    async def value(text: str) -> float:
        scored = await backend.logprob(messages_for(text, system), answer)
        return scored.mean_over(target["start"], target["end"])

    async def placebos() -> list[float]:
        base = await value(prompt)
        return [base - await value(placebo_prompt(prompt, spans, k, SEED, answer)) for k in HELDOUT_PLACEBOS]

    heldout = asyncio.run(placebos())
    result["heldout_placebo_scores"] = heldout
    for r in runs:
        if r.get("noise_floor") is not None:
            r["placebo_fpr"] = statistics.fmean(abs(x) > r["noise_floor"] for x in heldout)
    flagged = sorted({i for r in runs for i, f in enumerate(r["significant"] or []) if f} - set(item["culprits"]))
    params = GenerationParams(max_tokens=validation.max_tokens(item), temperature=0.0, seed=SEED)

    async def answer_without(i: int) -> str:
        keep = [j != i for j in range(len(spans))]
        return (await backend.complete(messages_for(render(prompt, spans, keep), system), params)).text

    result["causes"] = [i for i in flagged
                        if not validation.contains(asyncio.run(answer_without(i)), item["target"])]


# --------------------------------------------------------------------------- summary


def significance(results: list[dict], name: str) -> dict:
    """Significance precision and recall of one method over planted items: flagged spans that
    are culprits (precision), and also those that are verified causes (`causes`), and the
    culprits flagged (recall). A failed run flags nothing and finds no culprit."""
    flagged = right = cause = found = total = 0
    for r in results:
        if r["kind"] == "null":
            continue
        run = r["runs"][name]
        marks = run.get("significant") or []
        culprits, causes = set(r["culprits"]), set(r.get("causes", []))
        total += len(culprits)
        for i, f in enumerate(marks):
            if f:
                flagged += 1
                right += i in culprits
                cause += i in culprits or i in causes
                found += i in culprits
    return {"sig_precision": right / flagged if flagged else None,
            "sig_precision_causes": cause / flagged if flagged else None,
            "sig_recall": found / total if total else None, "flagged": flagged}


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(results: list[dict], methods) -> dict:
    planted = [r for r in results if r["kind"] != "null"]
    nulls = [r for r in results if r["kind"] == "null"]
    twice = [r for r in results if r["kind"] == "stated_twice"]
    parts = [r for r in results if r["kind"] == "answer_part"]
    rows = {}
    for name in methods:
        runs = [r["runs"][name] for r in planted]
        ok = [x for x in runs if x["scores"] is not None]
        topk = [x["topk_norm"] for x in ok if "topk_norm" in x]
        null_runs = [r["runs"][name] for r in nulls if r["runs"][name]["scores"] is not None]
        all_runs = [r["runs"][name] for r in results]  # failures are counted over every item
        # answer_part items: a failed untargeted run is a miss for both of its Hit@1; a sentence
        # never re-scored (the library lacks for_target) is left out: not measured
        untargeted = [r["runs"][name].get("untargeted") or {"scores": None} for r in parts]
        rows[name] = {
            # a run that failed or stopped counts as a miss for Hit@1 and MRR
            "hit1": _mean([x.get("hit1", 0.0) if x["scores"] is not None else 0.0 for x in runs]),
            "hit1_untargeted": _mean([u.get("hit1", 0.0) if u["scores"] is not None else 0.0 for u in untargeted]),
            "hit1_sentence": _mean([u.get("hit1_sentence") if u["scores"] is not None else 0.0 for u in untargeted]),
            "answer_part_items": len(parts),
            "mrr": _mean([x.get("rr", 0.0) if x["scores"] is not None else 0.0 for x in runs]),
            "topk_norm": _mean(topk),
            "topk_items": sum(v is not None for v in topk),
            "topk_skipped": sum(v is None for v in topk),
            "lds": _mean([x.get("lds") for x in ok]),
            "lds_items": sum(x.get("lds") is not None for x in ok),
            "calls": _mean([x["calls"] for x in runs]),
            "wall_s": _mean([x["wall_s"] for x in runs]),
            "null_clean": None if methods[name] is None or not null_runs
            else _mean([0.0 if x["any_significant"] else 1.0 for x in null_runs]),
            "twice_top2": _mean([1.0 if r["runs"][name].get("twice_top2") else 0.0 for r in twice
                                 if r["runs"][name]["scores"] is not None]),
            "failed_runs": sum(x["scores"] is None for x in all_runs),
            "placebo_fpr": _mean([r["runs"][name].get("placebo_fpr") for r in results]),
            "passes": _mean([x.get("passes") for x in runs]),
            "placebo_calls": _mean([x.get("placebo_calls") for x in runs]),
            "behaviour_calls": _mean([x.get("behaviour_calls") for x in runs]),
            **(significance(results, name) if methods[name] is not None else {}),
        }
    return rows


def f(v, digits=2) -> str:
    """A table cell: the number to `digits` places, or a dash for none."""
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def table(rows: dict) -> str:
    header = ["method", "Hit@1", "Hit@1 untargeted", "Hit@1 sentence", "MRR", "top-k del. (norm.)", "LDS", "calls",
              "wall s", "null clean", "twice top-2"]
    return markdown(header, ([name, f(r["hit1"]), f(r.get("hit1_untargeted")), f(r.get("hit1_sentence")), f(r["mrr"]),
                              f(r["topk_norm"]), f(r["lds"]), f(r["calls"], 1), f(r["wall_s"], 1),
                              f(r["null_clean"]), f(r["twice_top2"])] for name, r in rows.items()))


def significance_table(rows: dict) -> str:
    """Whether "significant" means what it says, per method (see `significance`)."""
    header = ["method", "sig. precision", "precision (verified causes)", "sig. recall", "null clean", "placebo FPR",
              "passes", "calls", "of which placebo + behaviour", "wall s"]

    def row(name: str, r: dict) -> list[str]:
        extra = None if r.get("placebo_calls") is None else r["placebo_calls"] + (r.get("behaviour_calls") or 0)
        return [name, f(r.get("sig_precision")), f(r.get("sig_precision_causes")), f(r.get("sig_recall")),
                f(r["null_clean"]), f(r.get("placebo_fpr"), 3), f(r.get("passes"), 1), f(r["calls"], 1),
                f(extra, 1), f(r["wall_s"], 1)]

    return markdown(header, (row(name, r) for name, r in rows.items()
                             if r.get("sig_recall") is not None or r.get("null_clean") is not None))


def subsets(results: list[dict], methods) -> dict:
    """The summary over every item, the easy ones and the hard ones (items marked "hard")."""
    groups = {"all": results, "easy": [r for r in results if not r.get("hard")],
              "hard": [r for r in results if r.get("hard")]}
    return {name: summarise(group, methods) for name, group in groups.items() if group}


def tables(results: list[dict], methods) -> str:
    out = []
    for name, rows in subsets(results, methods).items():
        out += [f"### {name} items ({sum(1 for r in results if name == 'all' or bool(r.get('hard')) == (name == 'hard'))})",
                "", table(rows), "", significance_table(rows), ""]
    return "\n".join(out)


def _brief(item: dict, res: dict) -> str:
    """One progress word per method: hit, or the reciprocal rank (x: failed; null items: clean or
    flag); answer_part items add the untargeted and the sentence Hit@1 (u=, s=; ? not measured)."""
    words = []
    for m, r in res["runs"].items():
        if r["scores"] is None:
            word = "x"
        elif not item["culprits"]:
            word = "clean" if not r["any_significant"] else "flag"
        else:
            word = "hit" if r.get("hit1") == 1 else str(round(r.get("rr", 0), 2))
        u = r.get("untargeted")
        if u is not None:
            hits = ["?" if u.get(key) is None else f"{u[key]:g}" for key in ("hit1", "hit1_sentence")]
            word += f"(u={hits[0]},s={hits[1]})"
        words.append(f"{m}={word}")
    return " ".join(words)


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _write(path: str, out: dict) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)  # a checkpoint is never half-written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Faithfulness benchmark with planted-culprit prompts (local model).")
    ap.add_argument("--items", default=str(validation.ITEMS))
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_PER_KIND} valid item(s) of each kind only")
    ap.add_argument("--out", help="per-item results (JSON), rewritten after every item "
                    "(default: results.json, or results_KIND[_KIND].json with --kinds)")
    ap.add_argument("--kinds", type=lambda v: v.split(","), metavar="KIND[,KIND]",
                    help="only the items of these kinds (e.g. answer_part); write them to their own --out")
    ap.add_argument("--hard", choices=["only", "none"], help="only the hard items, or none of them")
    ap.add_argument("--heldout-masks", type=int, default=HELDOUT_MASKS,
                    help=f"held-out masks per item for the LDS (default {HELDOUT_MASKS}; 0: no LDS, faster)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from --out (its verdicts and scored items are kept)")
    ap.add_argument("--methods", nargs="*", choices=list(METHODS), help="a subset of the methods")
    ap.add_argument("--runs-dir", help="where the attribution runs are saved (default: a temporary folder)")
    ap.add_argument("--summarise", metavar="RESULTS", help="print the table of a saved results file, run nothing")
    args = ap.parse_args(argv)
    if args.summarise:
        saved = json.loads(Path(args.summarise).read_text(encoding="utf-8"))
        print(tables(saved["items"], saved["config"]["methods"]))
        return 0

    methods = {m: METHODS[m] for m in (args.methods or METHODS)}
    kinds = args.kinds
    unknown = sorted(set(kinds or ()) - set(validation.KINDS))
    if unknown:
        ap.error(f"--kinds: unknown kind(s) {unknown}; the kinds are {', '.join(validation.KINDS)}")
    # A partial run gets its own file by default, so it never overwrites the full benchmark's.
    parts = [*(kinds or ()), *([f"hard-{args.hard}"] if args.hard else [])]
    args.out = args.out or ("_".join(["results", *parts]) + ".json" if parts else "results.json")
    # A private call cache for the deletion scores: never the user's, never stale.
    cache = tempfile.TemporaryDirectory(prefix="faithfulness-cache-")
    os.environ["PROMPT_ATTR_CACHE_DIR"] = cache.name
    runs_tmp = None if args.runs_dir else tempfile.TemporaryDirectory(prefix="faithfulness-runs-")
    runs_dir = Path(args.runs_dir or runs_tmp.name)
    started, load_start = time.perf_counter(), load()
    backend = validation.local_backend()  # one answer per prompt (see validate.local_backend)
    items = validation.load_items(args.items)
    if kinds:
        items = [it for it in items if it["kind"] in kinds]
    if args.hard:
        items = [it for it in items if bool(it.get("hard")) == (args.hard == "only")]

    previous = None
    if args.resume and Path(args.out).exists():
        previous = json.loads(Path(args.out).read_text(encoding="utf-8"))
        if (previous["config"]["quick"] != args.quick or list(previous["config"]["methods"]) != list(methods)
                or previous["config"].get("kinds") != kinds or previous["config"].get("hard") != args.hard):
            raise SystemExit(f"--resume: {args.out} was written with other options (--quick / --methods / --kinds)")
        if previous["config"]["items_sha256"] != validation.items_digest(items):
            raise SystemExit(f"--resume: {args.items} changed since {args.out} was written")
        print(f"resuming {args.out}: {len(previous['verdicts'])} verdicts and {len(previous['items'])} items kept")
    known = {v["id"]: validation.Verdict(**v) for v in previous["verdicts"]} if previous else {}
    verdicts: list = []
    results: list = list(previous["items"]) if previous else []
    spent = dict(previous["timings_s"]) if previous else {"validation": 0.0, "scoring": 0.0}
    loads = list(previous["machine"]["loads"]) if previous else []
    loads.append({"session_start": load_start})

    def snapshot(final: bool) -> dict:
        rows = summarise(results, methods)
        valid_ids = {v.id for v in verdicts if v.valid}
        return {
            "complete": final,
            "config": {"seed": SEED, "heldout_seed": HELDOUT_SEED, "heldout_masks": args.heldout_masks,
                       "random_draws": RANDOM_DRAWS, "max_tokens": MAX_TOKENS,
                       "kind_max_tokens": validation.KIND_MAX_TOKENS, "segment": "line",
                       "methods": dict(methods), "quick": args.quick, "kinds": kinds, "hard": args.hard,
                       "items": args.items,
                       "items_sha256": validation.items_digest(items)},
            "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "loads": loads},
            "candidates": len(items),
            "valid_counts": {k: sum(1 for it in items if it["id"] in valid_ids and it["kind"] == k)
                             for k in validation.KINDS},
            "invalid": [v.as_dict() for v in verdicts if not v.valid],
            "verdicts": [v.as_dict() for v in verdicts],
            "summary": rows,
            "subsets": subsets(results, methods),
            "table": tables(results, methods),
            "timings_s": {"validation": round(spent["validation"], 1), "scoring": round(spent["scoring"], 1),
                          "total": round(spent["validation"] + spent["scoring"], 1), "sessions": len(loads)},
            "items": results,
        }

    # Validation, one checkpoint per item (--quick: in order, until each kind has its quota).
    print(f"validating {len(items)} candidate items on the greedy local model (load {load_start})")
    gen, per_kind = validation.Generator(backend), dict.fromkeys(validation.KINDS, 0)
    for it in items:
        if args.quick and per_kind[it["kind"]] >= QUICK_PER_KIND:
            continue
        t = time.perf_counter()
        v = known.get(it["id"]) or validation.validate_item(it, gen)
        spent["validation"] += 0.0 if it["id"] in known else time.perf_counter() - t
        verdicts.append(v)
        per_kind[it["kind"]] += v.valid
        print(f"  {'valid  ' if v.valid else 'INVALID'} {v.id:<24} {v.kind:<13} {v.reason}")
        if it["id"] not in known:
            _write(args.out, snapshot(False))
    valid_ids = {v.id for v in verdicts if v.valid}
    valid = [it for it in items if it["id"] in valid_ids]
    counts = {k: sum(1 for it in valid if it["kind"] == k) for k in validation.KINDS}
    print(f"{len(valid)} valid items ({spent['validation']:.0f} s to validate): {counts}")

    done = {r["id"] for r in results}
    for index, item in enumerate(valid):
        if item["id"] in done:
            continue
        ti = time.perf_counter()
        res = score_item(item, index, runs_dir, methods, backend, heldout_count=args.heldout_masks)
        res["item_s"] = round(time.perf_counter() - ti, 2)
        res["load"] = load()
        results.append(res)
        spent["scoring"] += res["item_s"]
        _write(args.out, snapshot(False))
        print(f"  [{index + 1}/{len(valid)}] {item['id']:<22} {res['item_s']:5.1f} s  {_brief(item, res)}")
        sys.stdout.flush()

    order = {it["id"]: i for i, it in enumerate(valid)}
    results.sort(key=lambda r: order[r["id"]])
    loads[-1]["session_end"] = load()
    out = snapshot(True)
    rows = out["summary"]
    print()
    print(out["table"])
    print()
    any_row = next(iter(rows.values()))
    print(f"valid items: {counts} (planted-culprit items: {len(valid) - counts['null']}, null: {counts['null']}; "
          f"{len(items)} candidates)")
    print(f"top-k del. (norm.): {any_row['topk_items']} items, {any_row['topk_skipped']} skipped (oracle - random <= 0)")
    print(f"failed runs per method: { {m: r['failed_runs'] for m, r in rows.items()} }")
    print(f"time: {out['timings_s']['total']:.0f} s of work ({spent['validation']:.0f} s validation, "
          f"{spent['scoring']:.0f} s runs and deletions) in {len(loads)} session(s), this one "
          f"{time.perf_counter() - started:.0f} s; load average {load_start} at start, {load()} at end; "
          f"{os.cpu_count()} cores")
    _write(args.out, out)
    print(f"per-item results: {args.out}")
    cache.cleanup()
    if runs_tmp is not None:
        runs_tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
