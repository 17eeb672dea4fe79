"""Per-token log-probabilities on disk: a run folder's `logprobs.f32`.

A log-probability run keeps, for every evaluation, the log-probability of
each token of the baseline answer (core/schema.py: TokenValues), so any
part of the answer can be explained later without a model call. Those
numbers are most of what such a run measures, and JSON text cannot hold a
float32 in fewer than five characters, so they are appended here as raw
little-endian float32 (4 bytes each) while run.json and events.jsonl hold
where each evaluation's numbers are and their CRC-32.

Order of writes: an evaluation's numbers reach this file (flushed) before
its event reaches events.jsonl, so no stored event ever points past the
end of the file. A run killed between the two leaves numbers no event
names: harmless, the next session appends after them. On reading, numbers
that are missing, cut short or changed (the CRC says so) are left out:
that evaluation then cannot serve another part of the answer, and the
views say so; nothing is ever read from the wrong place.
"""

from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path

from ..core.events import BaselineDone, Evaluated
from ..core.schema import RunRecord, TokenValues

FILE = "logprobs.f32"
WIDTH = 4  # bytes per number


class TokenFile:
    """The writer's side: appends numbers, returning the events with their place on disk."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / FILE
        self._fh = None

    def place(self, event):
        """Write the numbers an event carries; the event as stored (with `at` and `crc32` set)."""
        if isinstance(event, Evaluated) and event.evaluation.tokens is not None:
            tokens = self._write(event.evaluation.tokens)
            return event.model_copy(update={"evaluation": event.evaluation.model_copy(update={"tokens": tokens})})
        if isinstance(event, BaselineDone) and event.tokens is not None:
            answer = event.tokens.model_copy(update={"baseline": self._write(event.tokens.baseline)})
            return event.model_copy(update={"tokens": answer})
        return event

    def _write(self, tokens: TokenValues) -> TokenValues:
        if tokens.at is not None or tokens.values is None:
            return tokens  # already placed (a resumed run's), or nothing to write
        if self._fh is None:
            self._fh = open(self.path, "ab")  # noqa: SIM115 - open for the run's life
        end = self._fh.seek(0, os.SEEK_END)
        if end % WIDTH:  # a torn write of a killed session: pad to the next whole number
            self._fh.write(b"\0" * (WIDTH - end % WIDTH))
            end += WIDTH - end % WIDTH
        self._fh.write(tokens.values)
        self._fh.flush()
        return tokens.model_copy(update={"at": end // WIDTH, "crc32": zlib.crc32(tokens.values)})

    def sync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()


def attach(record: RunRecord, folder: Path) -> None:
    """Fill every stored TokenValues of a record read from disk with its numbers (see module doc).

    Only a regular file is read (a FIFO or a device in its place is never opened for reading,
    so `show` cannot hang), and only each evaluation's own bytes, never the whole file."""
    slots = [e.tokens for e in record.evaluations if e.tokens is not None]
    answer = record.answer_tokens
    if answer is not None:
        slots.append(answer.baseline)
    if not slots:
        return
    usual = len(answer.offsets) if answer is not None else None
    try:
        fd = os.open(Path(folder) / FILE, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return  # missing or unreadable: every slot keeps values=None, and the views say so
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        for tokens in slots:
            tokens.values = _slice(fd, info.st_size, tokens, usual)
    finally:
        os.close(fd)


def _slice(fd: int, size: int, tokens: TokenValues, usual: int | None) -> bytes | None:
    """The numbers of one TokenValues, or None when they are not (all) there or do not check."""
    if tokens.at is None or tokens.crc32 is None:
        return None
    expected = len(tokens.offsets) if tokens.offsets is not None else usual
    if expected != tokens.count or (tokens.at + tokens.count) * WIDTH > size:
        return None  # its offsets do not cut the answer into as many tokens, or the file is short
    try:
        chunk = os.pread(fd, tokens.count * WIDTH, tokens.at * WIDTH)
    except OSError:
        return None
    if len(chunk) != tokens.count * WIDTH or zlib.crc32(chunk) != tokens.crc32:
        return None
    return chunk
