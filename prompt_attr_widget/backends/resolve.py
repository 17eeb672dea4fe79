"""The model-spec parser that picks a backend.

Model specs: `local`, `local:/path/to/model.gguf`, `openai:<model>`, a bare
OpenAI model name such as `gpt-4o-mini`, any name together with a base URL
(an OpenAI-compatible server), or `fake` for tests.
"""

from __future__ import annotations

import os
import re

from ..core.config import AttributionConfig
from ..core.errors import UsageError
from ..core.identity import public_url
from .base import Backend
from .prices import lookup_price

_OPENAI_NAME = re.compile(r"^(gpt-|chatgpt-|o\d(-|$)|text-embedding-|davinci|babbage)")


def resolve_backend(config: AttributionConfig, api_key: str | None = None) -> Backend:
    """Build the backend a config names, or say which names are understood."""
    spec = config.model
    kind, _, rest = spec.partition(":")
    if kind == "local":
        if config.base_url:  # asked for a server, and would silently get the embedded model
            raise UsageError(
                f"--base-url {public_url(config.base_url)} names a server, but the model is {spec!r} (the embedded one, "
                "the default): give --model with the server's model name (base_url= and model= in Python), "
                "for example --model smollm2 --base-url http://127.0.0.1:8000/v1"
            )
        from .local import LocalBackend

        return LocalBackend(rest or None)
    if kind == "fake":
        from .fake import FakeBackend

        if rest not in ("", "logprob"):
            raise UsageError("fake backends are 'fake' (black-box) and 'fake:logprob' (with log-probabilities)")
        return FakeBackend(price=config.price, embed_price=config.embed_price, logprobs=rest == "logprob")
    if kind == "openai" or config.base_url or _OPENAI_NAME.match(spec) or lookup_price(spec):
        model = rest if kind == "openai" else spec
        if not model:
            raise UsageError("openai: needs a model name, for example openai:gpt-4o-mini")
        from .endpoint import check_endpoint
        from .openai import OpenAIBackend

        # The SDK falls back to OPENAI_BASE_URL: that is where the prompts would go.
        check_endpoint(config.base_url or os.environ.get("OPENAI_BASE_URL"), config.allow_insecure)
        return OpenAIBackend(
            model,
            base_url=config.base_url,
            api_key=api_key,
            embed_model=config.embed_model,
            timeout=config.timeout,
            max_retries=config.max_retries,
            price=config.price,
            embed_price=config.embed_price,
            logprob_template=config.logprob_template,
        )
    raise UsageError(
        f"unknown model {spec!r}: use 'local' (embedded, offline), 'local:/path/to/model.gguf', "
        "an OpenAI model such as 'gpt-4o-mini' or 'openai:<model>', or any model name with "
        "--base-url for an OpenAI-compatible server"
    )
