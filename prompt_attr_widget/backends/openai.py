"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server).

The official `AsyncOpenAI` client does the HTTP work, including its own
retries with exponential backoff on 429 and 5xx; this module only turns its
exceptions into sentences a user can act on, with the URL named and the API
key never repeated.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from ..config import Price
from ..cost import lookup_price
from ..errors import BackendError
from .base import BackendInfo, Completion, Embeddings, GenerationParams, TokenLogprobs

OFFICIAL_URL = "https://api.openai.com/v1"
DEFAULT_EMBED_MODEL = "text-embedding-3-small"
NO_KEY_PLACEHOLDER = "no-key-required"


def public_url(url: str | None) -> str | None:
    """The URL without user info, query or fragment: safe to log and store."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets, or the URL is ambiguous
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        embed_model: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        price: Price | None = None,
        embed_price: Price | None = None,
        logprob_template: str = "chatml",
    ):
        import openai

        self._openai = openai
        official = base_url is None or public_url(base_url) == OFFICIAL_URL
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if official:
                raise BackendError(
                    f"no API key for OpenAI model {model!r}: set OPENAI_API_KEY "
                    "(or pass api_key=...), or use --model local for the embedded model"
                )
            key = NO_KEY_PLACEHOLDER
        self._secret = key
        self._official = official
        self._logprob_ok: bool | None = None
        self.logprob_template = logprob_template
        self.url = public_url(base_url) or OFFICIAL_URL
        self.timeout = timeout
        self.client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        embed_model = embed_model or (DEFAULT_EMBED_MODEL if official else model)
        if embed_price is None and price is not None and not official:
            # A self-hosted server has no price table, and the one price a user
            # can give (--price-in/--price-out) must let a budget work: its
            # embeddings are charged at that price's input rate.
            embed_price = Price(input=price.input)
        self.info = BackendInfo(
            backend="openai",
            model=model,
            embed_model=embed_model,
            base_url=None if official else self.url,
            price=price or (lookup_price(model, "chat") if official else None),
            embed_price=embed_price or (lookup_price(embed_model, "embedding") if official else None),
        )

    async def complete(self, messages: list[dict], params: GenerationParams) -> Completion:
        try:
            resp = await self.client.chat.completions.create(
                model=self.info.model,
                messages=messages,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                seed=params.seed,
            )
        except self._openai.OpenAIError as exc:
            raise self._explain(exc, self.info.model) from None
        if not getattr(resp, "choices", None):
            raise BackendError(f"malformed response from {self.url}: it has no choices")
        choice = resp.choices[0]
        text = choice.message.content if choice.message else None
        if text is None:
            raise BackendError(f"malformed response from {self.url}: the choice has no message text")
        if resp.system_fingerprint:
            self.info.fingerprint["system_fingerprint"] = resp.system_fingerprint
        usage = resp.usage
        return Completion(
            text=text,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
            system_fingerprint=resp.system_fingerprint,
        )

    async def embed(self, texts: list[str]) -> Embeddings:
        try:
            resp = await self.client.embeddings.create(model=self.info.embed_model, input=texts)
        except self._openai.OpenAIError as exc:
            raise self._explain(exc, self.info.embed_model) from None
        data = sorted(getattr(resp, "data", None) or [], key=lambda d: d.index)
        if len(data) != len(texts) or any(not d.embedding for d in data):
            raise BackendError(
                f"malformed embeddings from {self.url}: asked for {len(texts)}, got {len(data)}"
            )
        if any(not all(isinstance(x, (int, float)) for x in d.embedding) for d in data):
            # llama.cpp without a pooling type answers one vector per token.
            raise BackendError(
                f"malformed embeddings from {self.url}: expected one flat vector of numbers per text "
                "(does the server pool its embeddings? llama.cpp needs a pooling type such as mean)"
            )
        vectors = [list(map(float, d.embedding)) for d in data]
        if len({len(v) for v in vectors}) != 1:
            raise BackendError(f"malformed embeddings from {self.url}: vectors differ in size")
        usage = getattr(resp, "usage", None)
        return Embeddings(vectors=vectors, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0)

    async def supports_logprob(self) -> bool:
        """Probe once with a one-token completion (the official API has no prompt log-probs)."""
        if self._logprob_ok is None:
            self._logprob_ok = False
            if not self._official:
                try:
                    probe = await self.logprob([{"role": "user", "content": "Hi"}], "Hello")
                    self._logprob_ok = bool(probe.logprobs)
                except BackendError:
                    pass
        return self._logprob_ok

    async def logprob(self, messages: list[dict], continuation: str) -> TokenLogprobs:
        """Echoed prompt log-probabilities from the completions endpoint (vLLM, llama.cpp).

        The conversation is rendered with `logprob_template` (ChatML by
        default, the format of SmolLM2, Qwen and many others; "plain" joins
        the messages with blank lines), the answer appended, and the
        server asked to echo the log-probability of every prompt token.
        """
        prefix = render_chat(messages, self.logprob_template)
        text = prefix + continuation
        try:
            resp = await self.client.completions.create(
                model=self.info.model, prompt=text, max_tokens=1, temperature=0, echo=True, logprobs=1
            )
        except self._openai.OpenAIError as exc:
            raise self._explain(exc, self.info.model) from None
        choice = resp.choices[0] if getattr(resp, "choices", None) else None
        lp = getattr(choice, "logprobs", None)
        tokens, values = getattr(lp, "tokens", None), getattr(lp, "token_logprobs", None)
        usage = getattr(resp, "usage", None)
        if not tokens or not values or len(tokens) != len(values):
            raise BackendError(
                f"{self.url} does not return prompt log-probabilities (completions with echo and "
                "logprobs); use --scorer embedding"
            )
        generated = getattr(usage, "completion_tokens", None)
        if generated is None:
            generated = 1 if choice.finish_reason == "length" else 0
        tokens, values = tokens[: len(tokens) - generated], values[: len(values) - generated]
        # Offsets come from the echoed tokens themselves: servers disagree on
        # text_offset (llama.cpp counts without special tokens such as
        # <|im_start|>, which its echoed text includes). The answer is the
        # last occurrence of the continuation in the echo.
        starts, pos = [], 0
        for token in tokens:
            starts.append(pos)
            pos += len(token)
        at = "".join(tokens).rfind(continuation) if continuation else -1
        if at < 0:
            raise BackendError(f"{self.url} echoed a prompt that does not end with the answer being scored")
        chosen = [
            (start - at, v)
            for start, v in zip(starts, values, strict=True)
            if v is not None and at <= start < at + len(continuation)
        ]
        return TokenLogprobs(
            logprobs=[float(v) for _, v in chosen],
            offsets=[o for o, _ in chosen],
            length=len(continuation),
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        )

    async def aclose(self) -> None:
        await self.client.close()

    def _explain(self, exc: Exception, model: str) -> BackendError:
        """Turn an SDK exception into an actionable sentence without the key."""
        o = self._openai
        if isinstance(exc, o.APITimeoutError):
            msg = f"no answer from {self.url} within {self.timeout:g} s; check the server or raise --timeout"
        elif isinstance(exc, o.APIConnectionError):
            msg = f"could not reach {self.url}: is the server running and the --base-url right?"
        elif isinstance(exc, o.AuthenticationError):
            msg = f"{self.url} rejected the API key (401): check OPENAI_API_KEY"
        elif isinstance(exc, o.NotFoundError):
            msg = f"model {model!r} was not found at {self.url}: check --model (and --embed-model)"
        elif isinstance(exc, o.RateLimitError):
            msg = f"{self.url} kept rate-limiting (429) after retries: lower --concurrency or set --rpm"
        elif isinstance(exc, o.APIStatusError):
            msg = f"{self.url} answered HTTP {exc.status_code}: {_short(exc.message)}"
        else:
            msg = f"{type(exc).__name__} talking to {self.url}: {_short(str(exc))}"
        return BackendError(msg.replace(self._secret, "***") if self._secret else msg)


def render_chat(messages: list[dict], template: str) -> str:
    """The conversation as one completion prompt, ending where the answer starts."""
    if template == "plain":
        return "\n\n".join(m["content"] for m in messages) + "\n\n"
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
