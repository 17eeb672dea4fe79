"""A deterministic, instant backend for unit tests and benchmarks (never the default).

Its "model" answers with the capitalised words of the prompt, in order, so
a test can plant a culprit: only sentences with capitalised words change
the answer. Embeddings are hashed bags of words, so the cosine distance
between two answers is real and repeatable. Its log-probabilities make an
answer word likely exactly when the prompt still contains it, so a fact
stated twice survives the deletion of either copy alone. With `jitter`,
each answer word's log-probability also moves by `jitter` times a standard
normal number drawn from a hash of the whole prompt and the word: any change
to the prompt, an irrelevant deletion included, moves the score a little, as
on a real model, and the calibrated noise floor has something to measure.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re

from ..core.config import Price
from .base import BackendInfo, Completion, Embeddings, GenerationParams, TokenLogprobs

_WORD = re.compile(r"\w+")
_DIM = 64


class FakeBackend:
    def __init__(
        self,
        *,
        latency: float = 0.0,
        price: Price | None = None,
        embed_price: Price | None = None,
        model: str = "fake",
        logprobs: bool = False,
        jitter: float = 0.0,
    ):
        self.latency = latency
        self.jitter = jitter
        self.logprobs = logprobs
        self.calls = 0
        self.embed_calls = 0
        self.logprob_calls = 0
        self.info = BackendInfo(
            backend="fake",
            model=model,
            embed_model="fake-bow-64",
            fingerprint={"algorithm": "capitalised-words-v1"},
            price=price if price is not None else Price(input=0, output=0),
            embed_price=embed_price if embed_price is not None else Price(input=0),
        )

    async def complete(self, messages: list[dict], params: GenerationParams) -> Completion:
        self.calls += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        prompt = "\n".join(m["content"] for m in messages)
        words = [w for w in _WORD.findall(prompt) if w[:1].isupper() and len(w) > 2]
        text = " ".join(words[: params.max_tokens]) or "(nothing)"
        return Completion(
            text=text,
            prompt_tokens=max(1, len(prompt) // 4),
            completion_tokens=len(text.split()),
            finish_reason="stop",
            system_fingerprint="fake-1",
        )

    async def embed(self, texts: list[str]) -> Embeddings:
        self.embed_calls += 1
        if self.latency:
            await asyncio.sleep(self.latency / 10)
        return Embeddings(vectors=[_bag_of_words(t) for t in texts], prompt_tokens=sum(len(t) // 4 + 1 for t in texts))

    async def supports_logprob(self, probe=None) -> bool:  # answered without a request
        return self.logprobs

    async def logprob(self, messages: list[dict], continuation: str) -> TokenLogprobs:
        """Each answer word is likely (-0.05) if the prompt contains it, unlikely (-3) if not."""
        self.logprob_calls += 1
        if self.latency:
            await asyncio.sleep(self.latency / 2)
        prompt_words = {w.lower() for m in messages for w in _WORD.findall(m["content"])}
        words = list(_WORD.finditer(continuation))
        prompt = "\x00".join(m["content"] for m in messages)
        return TokenLogprobs(
            logprobs=[(-0.05 if w.group().lower() in prompt_words else -3.0)
                      + (self.jitter * _normal(prompt, w.group()) if self.jitter else 0.0) for w in words],
            offsets=[w.start() for w in words],
            length=len(continuation),
            prompt_tokens=sum(len(m["content"]) // 4 + 1 for m in messages),
        )

    async def aclose(self) -> None:
        return None


def _normal(prompt: str, word: str) -> float:
    """A standard normal number fixed by the pair (Box-Muller on two hashed uniforms)."""
    digest = hashlib.blake2b(f"{prompt}\x01{word}".encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "little") + 1) / 2**64
    u2 = int.from_bytes(digest[8:], "little") / 2**64
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def _bag_of_words(text: str) -> list[float]:
    vec = [0.0] * _DIM
    for word in _WORD.findall(text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
        vec[h % _DIM] += 1.0 if h & 1 << 31 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]
