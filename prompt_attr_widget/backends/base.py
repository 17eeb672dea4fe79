"""The one protocol every model backend implements.

The engine only ever talks to this protocol, so adding a backend (vLLM with
prompt log-probabilities, say) never touches segmentation, planning,
scoring or the run store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..core.config import Price
from ..core.schema import covering


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 42

    def as_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "seed": self.seed}


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    system_fingerprint: str | None = None


@dataclass
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass
class TokenLogprobs:
    """Teacher-forced log-probabilities of a continuation, one per token.

    `offsets[i]` is where token i starts in the continuation (characters),
    so a target range of the answer selects its own tokens.
    """

    logprobs: list[float]
    offsets: list[int]
    length: int  # characters in the continuation
    prompt_tokens: int = 0  # as billed (0: the response reported no usage)
    completion_tokens: int = 1  # as billed: the one token a scoring call generates, or what the server reports

    def mean_over(self, start: int, end: int) -> float | None:
        """Mean log-probability of the tokens overlapping [start, end), or None if none do."""
        if not self.offsets:
            return None
        chosen = [lp for lp, c in zip(self.logprobs, covering(self.offsets, self.length, start, end), strict=True) if c]
        return sum(chosen) / len(chosen) if chosen else None


@dataclass
class BackendInfo:
    """What identifies the model behind the scores (recorded in every run)."""

    backend: str
    model: str
    embed_model: str
    base_url: str | None = None
    fingerprint: dict = field(default_factory=dict)
    price: Price | None = None
    embed_price: Price | None = None


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo

    async def complete(self, messages: list[dict], params: GenerationParams) -> Completion:
        """One chat completion, deterministic where the backend allows it."""

    async def embed(self, texts: list[str]) -> Embeddings:
        """One embedding vector per text."""

    async def aclose(self) -> None:
        """Release connections; the backend may be reused until then."""


@runtime_checkable
class LogprobBackend(Backend, Protocol):
    """A backend that can score a given answer (teacher forcing), not only generate one."""

    async def supports_logprob(self, probe=None) -> bool:
        """Whether log-probabilities of a given answer are available (probed once).

        A backend that asks its server must make that request through `probe`
        when given one (an async function with `logprob`'s arguments and
        result): the run passes its evaluator's, so the probe is budgeted and
        counted like every billed call. (A backend without the parameter is
        still asked, without it.)
        """

    async def logprob(self, messages: list[dict], continuation: str) -> TokenLogprobs:
        """Log-probability of each token of `continuation` as the answer to `messages`."""
