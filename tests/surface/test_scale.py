"""Long prompts: 100,000 characters in about 2,000 sentences.

Segmenting must stay interactive (well under a second at every level), and
a whole hierarchical run on the instant fake backend must neither blow up
memory nor take long: what is left is the engine's own cost.
Run with -s to see the figures.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest

import prompt_attr
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.stages.segment import LEVELS, _segment_cached

WORDS = ["the", "a", "river", "city", "morning", "report", "station", "garden", "window", "letter", "table", "market", "evening"]


def _sentence(i: int) -> str:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6)]
    if i % 50 == 0:
        words[2] = f"Name{i}"  # a capitalised word: the fake model's answer depends on a few sentences
    return f"{words[0].capitalize()} {' '.join(words[1:])}, e.g. item no. {i}."


def long_prompt(sentences: int = 2000) -> str:
    """Paragraphs of ten sentences under a heading every twenty paragraphs."""
    paragraphs = [" ".join(_sentence(i) for i in range(p, p + 10)) for p in range(0, sentences, 10)]
    parts = []
    for i, paragraph in enumerate(paragraphs):
        if i % 20 == 0:
            parts.append(f"## Part {i // 20 + 1}")
        parts.append(paragraph)
    return "\n\n".join(parts)


PROMPT = long_prompt()


def best_time(level: str, repeats: int = 3) -> tuple[float, int]:
    """Fastest of a few cold runs (the memo cleared each time), and the span count."""
    times = []
    for _ in range(repeats):
        _segment_cached.cache_clear()
        start = time.perf_counter()
        n = len(prompt_attr.segment(PROMPT, level))
        times.append(time.perf_counter() - start)
    return min(times), n


def test_the_prompt_is_the_size_asked_for():
    assert 95_000 <= len(PROMPT) <= 130_000
    assert len(prompt_attr.segment(PROMPT, "sentence")) == 2000 + 10  # the sentences and the headings


@pytest.mark.parametrize("level", LEVELS)
def test_segmenting_100k_characters_takes_well_under_a_second(level):
    seconds, spans = best_time(level)
    print(f"\nsegment {level}: {spans} spans in {seconds * 1000:.1f} ms")
    assert seconds < 1.0, (level, seconds)


def test_a_hierarchical_run_over_2000_sentences_stays_small_and_quick(tmp_path):
    _segment_cached.cache_clear()
    tracemalloc.start()
    try:
        start = time.perf_counter()
        a = prompt_attr.attribute(PROMPT, backend=FakeBackend(), runs_dir=tmp_path, cache=False, faithfulness="off")
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rounds = max(e.round for e in a.record.evaluations)
    print(f"\nhierarchical: {len(a.spans)} spans, {len(a.record.evaluations)} evaluations in {rounds + 1} passes, "
          f"{seconds:.1f} s (under tracemalloc), peak {peak / 2**20:.1f} MB")
    assert a.status == "finished" and len(a.spans) == 2010 and rounds >= 1
    assert peak < 300 * 2**20
    assert seconds < 120


# Inputs that make a careless regex or scan quadratic: runs of sentence ends that
# no white space follows (the sentence regex once took ten seconds on 20,000 dots),
# initials, one endless word, endless white space, list items and fences.
PATHOLOGICAL = {
    "dots": "a" + "." * 100_000 + "b",
    "marks": "?!…" * 33_000,
    "initials": "a." * 50_000 + " end",
    "one word": "x" * 100_000 + ". y",
    "spaces": "a" + " \t" * 50_000 + "b.",
    "list items": "- x\n" * 25_000,
    "fences": "```\n" * 25_000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_text_segments_in_linear_time(name):
    text = PATHOLOGICAL[name]
    for level in LEVELS:
        _segment_cached.cache_clear()
        start = time.perf_counter()
        prompt_attr.segment(text, level)
        seconds = time.perf_counter() - start
        assert seconds < 1.0, (name, level, seconds)
