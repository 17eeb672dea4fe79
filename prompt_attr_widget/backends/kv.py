"""Prefix reuse on a llama.cpp context that cannot change a result: position-aligned chunks.

llama.cpp's numbers for a token depend on how the tokens before it were split
into decode batches (a token evaluated alone gets other last bits than the
same token evaluated in a batch), so reusing "whatever the previous call left
in the KV cache" makes an answer depend on the call before it. Here every
sequence is decoded in chunks aligned to absolute positions, [0, C), [C, 2C),
..., whatever is cached. A whole chunk's keys and values are then a function
of the tokens up to its end alone (its batch is the same C tokens at the same
positions and cells, attending to the same earlier chunks), so a chunk cached
by an earlier call is, bit for bit, the chunk this call would compute: reusing
the whole chunks of the common prefix changes nothing. A partial last chunk
is never reused, and neither is anything llama-cpp-python's own sampling loop
decodes (one token per batch).

The cache holds one sequence (sequence 0, cell i = position i), so the
saving depends on the order of calls; the engine orders evaluations so that
neighbours share long prefixes (`stages.plan.prefix_order`).
"""

from __future__ import annotations

import os

REUSE_ENV = "PROMPT_ATTR_LOCAL_PREFIX_REUSE"
# Tokens per aligned chunk: a call recomputes half a chunk of its shared prefix
# on average, and smaller chunks decode slower per token. Measured here (2
# threads, a 349-token prompt): 3.34 / 3.07 / 2.81 ms per token for chunks of
# 16 / 32 / 64, 2.87 for one 512-token batch; at 32 the two costs balance.
CHUNK = 32


def reuse_enabled() -> bool:
    """Prefix reuse is on unless PROMPT_ATTR_LOCAL_PREFIX_REUSE=0 (for comparison: results are
    the same either way, only slower without)."""
    return os.environ.get(REUSE_ENV, "1").strip() != "0"


class AlignedKV:
    """Sequence 0 of one llama context, decoded only in position-aligned chunks.

    `cached` lists the tokens whose keys and values sit in the cache as whole
    chunks this class decoded; everything past them is recomputed. `computed`
    and `reused` count the tokens of the last `feed`, `totals` those of every
    feed so far as [feeds, computed, reused] (for the benchmark).
    """

    def __init__(self, llm, chunk: int = CHUNK):
        if not 0 < chunk <= llm.n_batch:
            raise ValueError(f"chunk {chunk} must be within the context's batch size {llm.n_batch}")
        self.llm, self.chunk = llm, chunk
        self.cached: list[int] = []
        self.computed = self.reused = 0
        self.totals = [0, 0, 0]
        self._watch()

    def reusable(self, ids: list[int], first: int) -> int:
        """How many leading tokens of `ids` come from the cache: whole chunks of the common
        prefix, and none at or past `first`, the first position whose logits are wanted."""
        if not reuse_enabled():
            return 0
        common = 0
        for a, b in zip(self.cached, ids[:first], strict=False):
            if a != b:
                break
            common += 1
        return common - common % self.chunk

    def feed(self, ids: list[int], first: int):
        """Decode `ids` (reusing what `reusable` allows) and return the logits of positions
        `first` .. len(ids) - 1, one row per position (float32, copied), with llama.cpp asked
        for those positions' logits only."""
        import numpy as np

        llm, size = self.llm, self.chunk
        ctx, batch, n_vocab = llm._ctx, llm._batch, llm.n_vocab()
        start = self.reusable(ids, first)
        self.cached = self.cached[:start]  # what is decoded below replaces the rest
        ctx.kv_cache_seq_rm(-1, start, -1)
        rows = []
        for at in range(start, len(ids), size):
            chunk = ids[at : at + size]
            b = batch.batch
            b.n_tokens = len(chunk)
            flagged = max(0, at + len(chunk) - max(first, at))
            for i, token in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i] = token, at + i, 1
                b.seq_id[i][0] = 0
                b.logits[i] = at + i >= first
            ctx.decode(batch)
            if len(chunk) == size:  # only once decoded: a failed batch leaves the cache as it was
                self.cached.extend(chunk)
            if flagged:
                out = np.ctypeslib.as_array(ctx.get_logits(), shape=(flagged * n_vocab,))
                rows.append(out.reshape(flagged, n_vocab).copy())
        # llama-cpp-python's own view of the context: its sampling loop resumes from here.
        llm.n_tokens = len(ids)
        llm.input_ids[: len(ids)] = ids
        self.computed, self.reused = len(ids) - start, start
        self.totals = [self.totals[0] + 1, self.totals[1] + self.computed, self.totals[2] + start]
        return np.concatenate(rows) if rows else np.zeros((0, n_vocab), dtype=np.float32)

    def _watch(self) -> None:
        """Keep `cached` true when llama-cpp-python decodes on the context itself.

        Its sampling loop (`Llama.eval`) first drops the cache from `n_tokens` on and decodes
        in its own batches; only the whole chunks before that point stay ours. Wrapping the
        instance's `eval` makes this hold whatever that loop decides to re-evaluate.
        """
        llm, real = self.llm, self.llm.eval

        def eval(tokens):
            keep = llm.n_tokens - llm.n_tokens % self.chunk
            self.cached = self.cached[:keep]
            return real(tokens)

        llm.eval = eval
