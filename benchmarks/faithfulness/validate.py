"""Causal validation of the planted-culprit items on the greedy local model.

An item is only a fair test of an attribution method if its culprits really
cause the behaviour. Each check generates an answer (greedy, the same
`max_tokens` as the benchmark runs) with some spans deleted, rendered
exactly as an attribution run renders them (`segment(prompt, segment_of(item))`
and `render`), and looks for the target in it, case-insensitively:

* planted items (every kind but `null`): the baseline answer contains the
  target, and the answer with every culprit span deleted together does not;
  for `stated_twice` also: deleting either copy alone still leaves the
  target in the answer (else the fact is not really stated twice);
* `answer_part` items (a planted kind whose target is one sentence of a
  longer answer): as planted items, and the baseline has at least
  `MIN_ANSWER_PARTS` parts (`answer_parts`: sentences, list items), so the
  target is a part of the answer, not the whole of it;
* `null` items: the baseline contains the target, and so does the answer
  with any single span deleted (each span in turn).

Spans are lines unless an item sets `segment` ("line", "sentence" or
"paragraph"; `segment_of(item)`): the `hard` items, long prompts of
paragraphs whose culprit is one sentence inside one of them, are segmented
by sentence. Culprit indices index `segment(prompt, segment_of(item))`.

Answers are `max_tokens(item)` tokens long: `MAX_TOKENS`, but longer for
`answer_part` items (`KIND_MAX_TOKENS`), whose answers ramble on past the
planted sentence; an item may set its own `max_tokens`.

Run `python benchmarks/faithfulness/validate.py [--items PATH] [--show]` to
print the verdict for every item (`--show` also prints the answers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ITEMS = HERE / "items.json"
KINDS = ("planted_fact", "language", "format", "persona", "stated_twice", "answer_part", "null")
MAX_TOKENS = 48  # the benchmark runs use the same, so their baselines are these answers
# answer_part items need room for several sentences after the planted one
KIND_MAX_TOKENS = {"answer_part": 96}
MIN_ANSWER_PARTS = 3
SEGMENTS = ("line", "sentence", "paragraph")  # an item's `segment`; "line" unless it says
DEFAULT_SEGMENT = "line"


@dataclass
class Verdict:
    id: str
    kind: str
    valid: bool
    reason: str  # why not, or "ok"
    answers: dict = field(default_factory=dict)  # "baseline", "-1,3", ... -> answer text
    calls: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def load_items(path: str | Path = ITEMS) -> list[dict]:
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    seen = set()
    for item in items:
        missing = {"id", "kind", "prompt", "culprits", "target", "note"} - set(item)
        if missing:
            raise ValueError(f"item {item.get('id')!r} lacks {sorted(missing)}")
        if item["kind"] not in KINDS:
            raise ValueError(f"item {item['id']!r}: unknown kind {item['kind']!r}")
        if item["id"] in seen:
            raise ValueError(f"duplicate item id {item['id']!r}")
        seen.add(item["id"])
        if (item["kind"] == "null") != (not item["culprits"]):
            raise ValueError(f"item {item['id']!r}: null items and only they have no culprits")
        if item["kind"] == "stated_twice" and len(item["culprits"]) != 2:
            raise ValueError(f"item {item['id']!r}: a stated_twice item has exactly two culprits")
        if "max_tokens" in item and not (isinstance(item["max_tokens"], int) and item["max_tokens"] > 0):
            raise ValueError(f"item {item['id']!r}: max_tokens must be a positive integer")
        if "segment" in item and item["segment"] not in SEGMENTS:
            raise ValueError(f"item {item['id']!r}: segment must be one of {', '.join(SEGMENTS)}, not {item['segment']!r}")
    return items


def max_tokens(item: dict) -> int:
    """The answer length of an item, for validation and every run alike (so the runs'
    baselines are the validated answers): its own `max_tokens`, else its kind's, else MAX_TOKENS."""
    return item.get("max_tokens") or KIND_MAX_TOKENS.get(item["kind"], MAX_TOKENS)


def segment_of(item: dict) -> str:
    """The segmentation level of an item, for validation and every run alike (its culprit
    indices index `segment(prompt, segment_of(item))`): its own `segment`, else "line"."""
    return item.get("segment") or DEFAULT_SEGMENT


def local_backend():
    """The embedded local model. It is deterministic: every call starts from an
    empty KV cache, so an answer here is the answer an attribution run gets."""
    from prompt_attr_widget.backends.local import LocalBackend

    return LocalBackend()


def items_digest(items: list[dict]) -> str:
    """SHA-256 of the items, to tell whether saved results still belong to them."""
    import hashlib

    blob = json.dumps(items, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Generator:
    """Greedy answers of the local model for a prompt with some spans deleted.

    Uses the library's own segmentation, rendering and message layout, so an
    answer here is the answer an attribution run of the same item gets.
    """

    def __init__(self, backend=None, max_tokens: int = MAX_TOKENS):
        backend = backend or local_backend()
        self.backend = backend
        self.max_tokens = max_tokens  # the default; an item's own length is passed to answer()
        self.calls = 0

    def spans(self, prompt: str, level: str = DEFAULT_SEGMENT):
        from prompt_attr_widget.stages.segment import segment

        return segment(prompt, level)

    def answer(self, prompt: str, system: str | None, dropped=(), max_tokens: int | None = None,
               level: str = DEFAULT_SEGMENT) -> str:
        from prompt_attr_widget.backends.base import GenerationParams
        from prompt_attr_widget.engine.plan import messages_for
        from prompt_attr_widget.stages.segment import render

        spans = self.spans(prompt, level)
        keep = [i not in set(dropped) for i in range(len(spans))]
        messages = messages_for(render(prompt, spans, keep), system)
        params = GenerationParams(max_tokens=max_tokens or self.max_tokens, temperature=0.0, seed=42)
        self.calls += 1
        return asyncio.run(self.backend.complete(messages, params)).text


def contains(answer: str, target: str) -> bool:
    return target.casefold() in answer.casefold()


def validate_item(item: dict, gen: Generator) -> Verdict:
    target, system = item["target"], item.get("system")
    level = segment_of(item)
    n = len(gen.spans(item["prompt"], level))
    verdict = Verdict(item["id"], item["kind"], False, "")
    calls0 = gen.calls

    def ask(dropped) -> str:
        key = "baseline" if not dropped else "-" + ",".join(map(str, sorted(dropped)))
        if key not in verdict.answers:
            verdict.answers[key] = gen.answer(item["prompt"], system, dropped, max_tokens(item), level)
        return verdict.answers[key]

    def done(valid: bool, reason: str) -> Verdict:
        verdict.valid, verdict.reason, verdict.calls = valid, reason, gen.calls - calls0
        return verdict

    if not target:
        return done(False, "no target")
    bad = [c for c in item["culprits"] if not 0 <= c < n]
    if bad:
        return done(False, f"culprit spans {bad} outside 0..{n - 1} (the prompt has {n} {level} spans)")
    if not contains(ask(()), target):
        return done(False, f"baseline lacks the target {target!r}")
    if item["kind"] == "null":
        for i in range(n):
            if not contains(ask((i,)), target):
                return done(False, f"deleting span {i} alone loses the target {target!r}")
        return done(True, "ok")
    if item["kind"] == "answer_part":
        from prompt_attr_widget.stages.segment import answer_parts

        parts = len(answer_parts(ask(())))
        if parts < MIN_ANSWER_PARTS:
            return done(False, f"the baseline has {parts} answer part(s), fewer than {MIN_ANSWER_PARTS}")
    culprits = tuple(sorted(item["culprits"]))
    if contains(ask(culprits), target):
        return done(False, f"deleting the culprits {list(culprits)} together keeps the target {target!r}")
    if item["kind"] == "stated_twice":
        for c in culprits:
            if not contains(ask((c,)), target):
                return done(False, f"deleting copy {c} alone already loses the target {target!r}")
    return done(True, "ok")


def validate(items: list[dict], gen: Generator | None = None, *, echo=print) -> tuple[list[dict], list[Verdict]]:
    """(the valid items, a verdict for every item); prints one line per item."""
    gen = gen or Generator()
    verdicts = []
    for item in items:
        v = validate_item(item, gen)
        verdicts.append(v)
        if echo:
            echo(f"  {'valid  ' if v.valid else 'INVALID'} {v.id:<24} {v.kind:<13} {v.reason}")
    valid_ids = {v.id for v in verdicts if v.valid}
    return [it for it in items if it["id"] in valid_ids], verdicts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", default=str(ITEMS))
    ap.add_argument("--only", nargs="*", help="item ids to validate")
    ap.add_argument("--show", action="store_true", help="also print every answer")
    ap.add_argument("--json", help="write the verdicts here")
    args = ap.parse_args(argv)
    items = load_items(args.items)
    if args.only:
        items = [it for it in items if it["id"] in set(args.only)]
    t = time.perf_counter()
    valid, verdicts = validate(items)
    if args.show:
        for v in verdicts:
            print(f"--- {v.id} ({v.reason})")
            for key, answer in v.answers.items():
                print(f"    {key:>9}: {answer!r}")
    counts = {k: sum(1 for it in valid if it["kind"] == k) for k in KINDS}
    print(f"{len(valid)}/{len(items)} valid in {time.perf_counter() - t:.0f} s: {counts}")
    if args.json:
        Path(args.json).write_text(json.dumps([v.as_dict() for v in verdicts], indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
