"""The one protocol every model backend implements.

The engine only ever talks to this protocol, so adding a backend (vLLM with
prompt log-probabilities, say) never touches segmentation, planning,
scoring or the run store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..config import Price


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
