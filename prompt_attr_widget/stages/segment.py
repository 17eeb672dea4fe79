"""Segment: split a prompt into spans with exact character offsets.

Offsets index the original string (Python code points), so a heat-map can
colour the prompt exactly as the user wrote it, CRLF line ends and all.
Spans never include surrounding white space and never cut a fenced code
block in two: a fence is always one atomic unit.

Levels, coarse to fine: heading → paragraph → sentence → tokens, and
line → tokens. When a level yields a single span the next finer one is
used, because one span cannot be attributed against anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from ..core.errors import UsageError
from ..core.schema import Span

LEVELS = ("heading", "paragraph", "sentence", "line", "tokens")
FINER = {"heading": "paragraph", "paragraph": "sentence", "sentence": "tokens", "line": "tokens"}

_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+\S")
# A match may only start where a run of end marks starts: a run that is not
# followed by white space then fails once, instead of being retried from each
# of its marks (quadratic: 20,000 dots took ten seconds).
_SENTENCE_END = re.compile(r"(?<![.!?…。！？])[.!?…。！？]+[\"'”’)\]]*(?=\s)")
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_INITIALS = re.compile(r"^(?:[^\W\d_]\.)*[^\W\d_]\Z")  # "a", "u.s", "e.u"
_ABBREVIATIONS = frozenset(
    ["e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "cf", "approx", "no", "fig", "al", "inc", "ltd"]
)


class _Block(tuple):
    """(start, end, kind) of a structural block; a tuple for speed."""


def segment(
    prompt: str,
    level: str = "sentence",
    *,
    window_tokens: int = 40,
    spans: Sequence[tuple[int, int]] | None = None,
) -> list[Span]:
    """Split `prompt` at `level`, falling back one level finer on a single span."""
    if not prompt or not prompt.strip():
        raise UsageError("the prompt is empty: give the text you want to attribute")
    _check_encodable(prompt)
    if spans is not None:
        return _user_spans(prompt, spans)
    if level == "auto":
        level = "sentence"
    if level not in LEVELS:
        raise UsageError(f"unknown segment level {level!r}; choose one of {', '.join(LEVELS)}")
    result = list(_segment_cached(prompt, level, window_tokens))
    while len(result) == 1 and level in FINER:
        level = FINER[level]
        result = list(_segment_cached(prompt, level, window_tokens))
    return result


def _check_encodable(prompt: str) -> None:
    """Refuse lone surrogates up front: no model, run file or widget can carry them."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"the prompt holds a lone surrogate ({prompt[exc.start]!r} at character {exc.start}), "
            "which is not valid Unicode text: decode the source with errors='replace'"
        ) from None


@lru_cache(maxsize=64)
def _segment_cached(prompt: str, level: str, window_tokens: int) -> tuple[Span, ...]:
    """Memoised on the prompt (its hash), so re-runs and re-renders are free."""
    ranges = _RANGES[level](prompt, window_tokens)
    out = []
    for start, end, kind in ranges:
        start, end = _trim(prompt, start, end)
        if end > start:
            out.append(Span(index=len(out), start=start, end=end, text=prompt[start:end], kind=kind))
    return tuple(out)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _lines(text: str):
    """Yield (start, end_without_newline, next_start) for every line."""
    pos, n = 0, len(text)
    while pos < n:
        nl = text.find("\n", pos)
        if nl == -1:
            yield pos, n, n
            return
        yield pos, nl, nl + 1
        pos = nl + 1


def _blocks(text: str) -> list[tuple[int, int, str]]:
    """Structural blocks: headings (one line), fences (atomic), paragraphs."""
    blocks: list[tuple[int, int, str]] = []
    para_start = None
    fence: tuple[int, str, int] | None = None  # (start, char, length)

    def close_paragraph(end: int) -> None:
        nonlocal para_start
        if para_start is not None:
            blocks.append((para_start, end, "text"))
            para_start = None

    for start, end, _next in _lines(text):
        line = text[start:end]
        if fence is not None:
            m = _FENCE.match(line)
            if m and m.group(1)[0] == fence[1] and len(m.group(1)) >= fence[2] and not line[m.end():].strip():
                blocks.append((fence[0], end, "fence"))
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            close_paragraph(start)
            fence = (start, m.group(1)[0], len(m.group(1)))
        elif not line.strip():
            close_paragraph(start)
        elif _HEADING.match(line):
            close_paragraph(start)
            blocks.append((start, end, "heading"))
        elif para_start is None:
            para_start = start
    if fence is not None:  # an unclosed fence runs to the end, as in CommonMark
        blocks.append((fence[0], len(text), "fence"))
    close_paragraph(len(text))
    return blocks


def _by_heading(text: str, _w: int):
    blocks = _blocks(text)
    sections: list[list] = []
    for start, end, kind in blocks:
        if kind == "heading" or not sections:
            sections.append([start, end, "heading" if kind == "heading" else "text"])
        else:
            sections[-1][1] = end
    return [tuple(s) for s in sections]


def _by_paragraph(text: str, _w: int):
    return _blocks(text)


def _by_line(text: str, _w: int):
    out = []
    for start, end, kind in _blocks(text):
        if kind == "fence":
            out.append((start, end, kind))
            continue
        for ls, le, _ in _lines(text[start:end]):
            out.append((start + ls, start + le, kind))
    return out


def _by_sentence(text: str, _w: int):
    out = []
    for start, end, kind in _blocks(text):
        if kind != "text":
            out.append((start, end, kind))
            continue
        for item_start, item_end, item_kind in _list_items(text, start, end):
            out.extend((s, e, item_kind) for s, e in _sentences(text, item_start, item_end))
    return out


def _list_items(text: str, start: int, end: int):
    """Split a paragraph where a new list item begins; other lines stay joined."""
    items, cur = [], start
    for ls, _le, _ in _lines(text[start:end]):
        if ls and _LIST_ITEM.match(text, start + ls):
            items.append((cur, start + ls))
            cur = start + ls
    items.append((cur, end))
    return [(s, e, "list" if _LIST_ITEM.match(text, s) else "text") for s, e in items]


def _sentences(text: str, start: int, end: int):
    out, cur = [], start
    marker = _LIST_ITEM.match(text, start, end)  # "1. " of a numbered item ends no sentence
    for m in _SENTENCE_END.finditer(text, start, end):
        if marker and m.start() < marker.end():
            continue
        if _is_abbreviation(text, start, m.start()):
            continue
        out.append((cur, m.end()))
        cur = m.end()
    out.append((cur, end))
    return out


def _is_abbreviation(text: str, floor: int, dot: int) -> bool:
    if text[dot] != ".":
        return False
    word_start = dot
    while word_start > floor and (text[word_start - 1].isalpha() or text[word_start - 1] == "."):
        word_start -= 1
    word = text[word_start:dot].lower()
    return word in _ABBREVIATIONS or _INITIALS.match(word) is not None


def _by_tokens(text: str, window: int):
    """Consecutive windows of about `window` word-like tokens; fences stay whole."""
    fences = [(s, e) for s, e, k in _blocks(text) if k == "fence"]
    out, win_start, count, last_end = [], None, 0, 0
    fence_iter = iter(fences)
    next_fence = next(fence_iter, None)
    for m in _TOKEN.finditer(text):
        while next_fence and m.start() >= next_fence[1]:
            if win_start is not None:
                out.append((win_start, last_end, "text"))
                win_start, count = None, 0
            out.append((next_fence[0], next_fence[1], "fence"))
            last_end = next_fence[1]
            next_fence = next(fence_iter, None)
        if next_fence and m.start() >= next_fence[0]:
            continue  # inside a fence: handled as one unit
        if win_start is None:
            win_start = m.start()
        count += 1
        last_end = m.end()
        if count >= window:
            out.append((win_start, last_end, "text"))
            win_start, count = None, 0
    if win_start is not None:
        out.append((win_start, last_end, "text"))
    while next_fence:
        out.append((next_fence[0], next_fence[1], "fence"))
        next_fence = next(fence_iter, None)
    return out


_RANGES = {
    "heading": _by_heading,
    "paragraph": _by_paragraph,
    "sentence": _by_sentence,
    "line": _by_line,
    "tokens": _by_tokens,
}


def answer_parts(answer: str) -> list[Span]:
    """The parts of a model's answer a reader points at: its sentences, each list item and each
    line of code on its own, headings whole, with exact character ranges into `answer`.

    The answer is a model's, not a prompt: the fallback to finer levels does not apply (a
    one-sentence answer is one part), fence marker lines are no part, and an empty answer has none.
    """
    ranges = []
    for start, end, kind in _blocks(answer):
        if kind == "fence":
            lines = [(start + a, start + b) for a, b, _ in _lines(answer[start:end])]
            ranges += [(a, b, "code") for a, b in lines[1:] if not _FENCE.match(answer, a, b)]
        elif kind == "heading":
            ranges.append((start, end, kind))
        else:
            for item_start, item_end, item_kind in _list_items(answer, start, end):
                if item_kind == "list":
                    ranges += [(item_start + a, item_start + b, "list") for a, b, _ in _lines(answer[item_start:item_end])]
                else:
                    ranges += [(a, b, item_kind) for a, b in _sentences(answer, item_start, item_end)]
    parts = []
    for start, end, kind in ranges:
        start, end = _trim(answer, start, end)
        if end > start:
            parts.append(Span(index=len(parts), start=start, end=end, text=answer[start:end], kind=kind))
    return parts


def _user_spans(prompt: str, spans: Sequence[tuple[int, int]]) -> list[Span]:
    """Spans given by the user: validated, sorted, non-overlapping, trimmed."""
    ordered = sorted((int(s), int(e)) for s, e in spans)
    out: list[Span] = []
    prev_end = 0
    for start, end in ordered:
        if not 0 <= start < end <= len(prompt):
            raise UsageError(f"span ({start}, {end}) is outside the prompt (0..{len(prompt)})")
        if start < prev_end:
            raise UsageError(f"span ({start}, {end}) overlaps the previous span")
        prev_end = end
        s, e = _trim(prompt, start, end)
        if e > s:
            out.append(Span(index=len(out), start=s, end=e, text=prompt[s:e]))
    if not out:
        raise UsageError("the given spans hold only white space")
    return out


def render(prompt: str, spans: Sequence[Span], keep: Sequence[bool]) -> str:
    """The prompt with every span whose keep flag is False deleted.

    Between two kept spans the strongest of the gaps that stood between them
    survives (most line breaks, then longest), so deleting a sentence leaves
    one space and deleting a paragraph leaves one blank line, never a hole
    and never two paragraphs glued together. Deleted spans before the first
    kept one or after the last go with their gaps.

    Called once per evaluation, so it works per run of deleted spans and
    copies the text between them as slices: a leave-one-out mask over a
    long prompt costs one pass of C string copying, not a Python loop over
    every span.
    """
    if len(keep) != len(spans):
        raise ValueError(f"{len(keep)} keep flags for {len(spans)} spans")
    dropped = [i for i, kept in enumerate(keep) if not kept]
    if not dropped:
        return prompt
    n, pieces, copied = len(spans), [], 0  # copied: prompt[:copied] is handled
    for first, last in _runs(dropped):
        if first == 0 and last == n - 1:  # nothing kept
            return prompt[: spans[0].start] + prompt[spans[-1].end :]
        if first == 0:  # leading spans go with the gaps after them
            cut, resume, joint = spans[0].start, spans[last + 1].start, ""
        elif last == n - 1:  # trailing spans go with the gaps before them
            cut, resume, joint = spans[first - 1].end, spans[-1].end, ""
        else:
            cut, resume = spans[first - 1].end, spans[last + 1].start
            gaps = [prompt[spans[i].end : spans[i + 1].start] for i in range(first - 1, last + 1)]
            joint = max(gaps, key=lambda g: (g.count("\n"), len(g)))
        pieces += [prompt[copied:cut], joint]
        copied = resume
    pieces.append(prompt[copied:])
    return "".join(pieces)


def _runs(indices: list[int]):
    """Maximal runs of consecutive indices, as (first, last) pairs."""
    first = prev = indices[0]
    for i in indices[1:]:
        if i != prev + 1:
            yield first, prev
            first = i
        prev = i
    yield first, prev
