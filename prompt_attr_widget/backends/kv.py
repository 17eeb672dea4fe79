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

Each sequence's cache holds one prompt (cell i = position i), so the saving
depends on the order of calls; the engine orders evaluations so that
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
    """The sequences of one llama context, each decoded only in position-aligned chunks.

    `streams[k]` lists the tokens whose keys and values sit in sequence k's
    cache as whole chunks this class decoded (`cached` is sequence 0's);
    everything past them is recomputed. `computed` and `reused` count the
    tokens of the last feed, `totals` those of every feed so far as [feeds,
    computed, reused] (for the benchmark). A context with several sequences
    keeps each in its own cells (a non-unified KV cache), so a sequence
    attends over exactly what it would alone.
    """

    def __init__(self, llm, chunk: int = CHUNK, sequences: int = 1):
        if not 0 < chunk <= llm.n_batch:
            raise ValueError(f"chunk {chunk} must be within the context's batch size {llm.n_batch}")
        self.llm, self.chunk = llm, chunk
        self.streams: list[list[int]] = [[] for _ in range(sequences)]
        self.computed = self.reused = 0
        self.totals = [0, 0, 0]
        self._watch()

    @property
    def cached(self) -> list[int]:
        return self.streams[0]

    @cached.setter
    def cached(self, tokens: list[int]) -> None:
        self.streams[0] = tokens

    def reusable(self, ids: list[int], first: int, seq: int = 0) -> int:
        """How many leading tokens of `ids` come from the cache: whole chunks of the common
        prefix, and none at or past `first`, the first position whose logits are wanted."""
        if not reuse_enabled():
            return 0
        common = 0
        for a, b in zip(self.streams[seq], ids[:first], strict=False):
            if a != b:
                break
            common += 1
        return common - common % self.chunk

    def feed(self, ids: list[int], first: int, seq: int = 0):
        """Decode `ids` on sequence `seq` (reusing what `reusable` allows) and return the logits
        of positions `first` .. len(ids) - 1, one row per position (float32, copied), with
        llama.cpp asked for those positions' logits only.

        One sequence per batch: llama.cpp splits a batch whose sequences bring unequal
        token counts into smaller batches, and on a non-unified cache that gave one of four
        sequences wrong numbers (logits off by 40, measured); a batch of equal counts, such
        as one token each (`greedy`), is exact."""
        import numpy as np

        llm, size = self.llm, self.chunk
        start = self.reusable(ids, first, seq)
        self.streams[seq] = self.streams[seq][:start]  # what is decoded below replaces the rest
        llm._ctx.kv_cache_seq_rm(seq, start, -1)
        rows = []
        for at in range(start, len(ids), size):
            chunk = ids[at : at + size]
            rows += [row for _, row in decode(llm, [(seq, at + i, t, at + i >= first) for i, t in enumerate(chunk)])]
            if len(chunk) == size:  # only once decoded: a failed batch leaves the cache as it was
                self.streams[seq].extend(chunk)
        if len(self.streams) == 1:  # llama-cpp-python's own view of its context: its sampling loop resumes here
            llm.n_tokens = len(ids)
            llm.input_ids[: len(ids)] = ids
        self.computed, self.reused = len(ids) - start, start
        self.totals = [self.totals[0] + 1, self.totals[1] + self.computed, self.totals[2] + start]
        return np.stack(rows) if rows else np.zeros((0, llm.n_vocab()), dtype=np.float32)

    def greedy(self, prompts: list[list[int]], limits: list[int]) -> list[tuple[list[int], bool]]:
        """Greedy answers to prompts, one sequence each: (tokens, ended by an end-of-generation
        token) per prompt. Each prompt but its last token is fed alone in aligned chunks;
        then every step decodes one token of each unfinished sequence, all in one batch,
        the last prompt token first. Alone or with others, the numbers are the same
        (measured: 0 difference), so an answer does not depend on what it was decoded with."""
        import llama_cpp
        import numpy as np

        if len(prompts) > len(self.streams):
            raise ValueError(f"{len(prompts)} prompts for {len(self.streams)} sequences")
        for k, ids in enumerate(prompts):
            self.feed(ids[:-1], len(ids), seq=k)
        current = {k: (len(p) - 1, p[-1]) for k, p in enumerate(prompts) if limits[k] > 0}
        tokens: list[list[int]] = [[] for _ in prompts]
        ended = [False] * len(prompts)
        while current:
            for k, logits in list(decode(self.llm, [(k, pos, t, True) for k, (pos, t) in current.items()])):
                token = int(np.argmax(logits))  # the first of equal maxima, as llama.cpp's greedy sampler
                if llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token):
                    ended[k] = True
                    del current[k]
                    continue
                tokens[k].append(token)
                if len(tokens[k]) >= limits[k]:
                    del current[k]
                else:
                    current[k] = (current[k][0] + 1, token)
        return list(zip(tokens, ended, strict=True))

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


def decode(llm, entries: list[tuple[int, int, int, bool]]):
    """Decode one llama.cpp batch of (sequence, position, token, logits wanted) entries and
    yield (sequence, logits row) for the wanted ones, in order (rows copied out)."""
    import numpy as np

    b = llm._batch.batch
    b.n_tokens = len(entries)
    wanted = [i for i, e in enumerate(entries) if e[3]]
    for i, (seq, pos, token, want) in enumerate(entries):
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, want
        b.seq_id[i][0] = seq
    llm._ctx.decode(llm._batch)
    if wanted:
        n_vocab = llm.n_vocab()
        out = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(wanted) * n_vocab,))
        out = out.reshape(len(wanted), n_vocab)
        for row, i in enumerate(wanted):
            yield entries[i][0], out[row].copy()
