"""The backends layer: one protocol (base.py) and its fake, local (llama.cpp) and
OpenAI-compatible models. Imports core only.

`resolve_backend` turns a model spec into one; endpoint.py decides which
servers a prompt may be sent to, prices.py what a call costs.
"""

from .base import Backend, BackendInfo, Completion, Embeddings, GenerationParams
from .resolve import resolve_backend

__all__ = ["Backend", "BackendInfo", "Completion", "Embeddings", "GenerationParams", "resolve_backend"]
