"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server).

The official `AsyncOpenAI` client does the HTTP work, including its own
retries with exponential backoff (honouring Retry-After) on 429, 5xx,
timeouts and dropped connections. What it does not retry is a broken 200:
truncated JSON (it raises json.JSONDecodeError), a page that is not JSON at
all (it returns the text as a str; embeddings raise AttributeError), an
empty `choices` list (returned as is; embeddings raise ValueError) or
embeddings of a new size. This module reports those as `BrokenAnswer`,
which the evaluator asks again for, each attempt within the budget (the
server billed the broken one), and turns every failure into a sentence a
user can act on, naming the fault and the URL, never repeating the API
key, and saying whether it may pass by itself (`BackendError.transient`).
"""

from __future__ import annotations

import json
import os
import re

from ..core.config import Price
from ..core.errors import BackendError, BrokenAnswer
from ..core.identity import public_url
from .base import BackendInfo, Completion, Embeddings, GenerationParams, TokenLogprobs
from .prices import lookup_price

OFFICIAL_URL = "https://api.openai.com/v1"
_SURROGATE = re.compile("[\ud800-\udfff]")
DEFAULT_EMBED_MODEL = "text-embedding-3-small"
NO_KEY_PLACEHOLDER = "no-key-required"


class _Malformed(Exception):
    """A 200 answer that cannot be used; the message names what is wrong with it."""




class OpenAIBackend:
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        embed_model: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
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
        self._embed_size: int | None = None  # of the first embeddings: a model's size never changes
        self.max_retries = max_retries
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
        return await self._ask(
            self.info.model,
            lambda: self.client.chat.completions.create(
                model=self.info.model,
                messages=messages,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                seed=params.seed,
            ),
            self._completion,
        )

    def _completion(self, resp) -> Completion:
        choice = _first_choice(resp)
        text = choice.message.content if choice.message else None
        if text is None:
            raise _Malformed("an answer whose choice has no message text")
        text = valid_unicode(text)
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
        return await self._ask(
            self.info.embed_model,
            lambda: self.client.embeddings.create(model=self.info.embed_model, input=texts),
            lambda resp: self._embeddings(resp, len(texts)),
        )

    def _embeddings(self, resp, asked: int) -> Embeddings:
        data = sorted(getattr(resp, "data", None) or [], key=lambda d: d.index)
        if len(data) != asked or any(not d.embedding for d in data):
            raise _Malformed(f"{len(data)} embeddings for {asked} texts")
        if any(not all(isinstance(x, (int, float)) for x in d.embedding) for d in data):
            # llama.cpp without a pooling type answers one vector per token: a setting, not a fault.
            raise BackendError(
                f"malformed embeddings from {self.url}: expected one flat vector of numbers per text "
                "(does the server pool its embeddings? llama.cpp needs a pooling type such as mean)"
            )
        vectors = [list(map(float, d.embedding)) for d in data]
        expected = self._embed_size or len(vectors[0])
        other = sorted({len(v) for v in vectors} - {expected})
        if other:
            # Scores compare every answer's embedding with the baseline's: a vector of
            # another size cannot be compared, so it is asked for again, never used.
            raise _Malformed(f"embeddings of {other[0]} numbers (the first had {expected})")
        self._embed_size = expected
        usage = getattr(resp, "usage", None)
        return Embeddings(vectors=vectors, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0)

    async def supports_logprob(self, probe=None) -> bool:
        """Probe once with a one-token completion (the official API has no prompt log-probs).

        Only a clear "no" (a 4xx such as 404, or an answer without log-probs)
        means no. A transient failure (5xx, timeouts, dropped connections,
        broken answers, after retries) raises instead: quietly falling back
        to the embedding scorer would change what the run measures. The probe
        is billed like any call: `probe` (a run's evaluator's `logprob`, same
        arguments) makes it within the run's budget; else it is made directly.
        """
        if self._logprob_ok is None and self._official:
            self._logprob_ok = False
        if self._logprob_ok is None:
            try:
                answer = await (probe or self.logprob)([{"role": "user", "content": "Hi"}], "Hello")
            except BackendError as exc:
                if exc.transient:
                    raise BackendError(
                        f"{exc} (while checking whether {self.url} offers prompt log-probabilities; "
                        "--scorer embedding skips that check)",
                        transient=True,
                    ) from None
                self._logprob_ok = False
            else:
                self._logprob_ok = bool(answer.logprobs)
        return self._logprob_ok

    async def logprob(self, messages: list[dict], continuation: str) -> TokenLogprobs:
        """Echoed prompt log-probabilities from the completions endpoint (vLLM, llama.cpp).

        The conversation is rendered with `logprob_template` (ChatML by
        default, the format of SmolLM2, Qwen and many others; "plain" joins
        the messages with blank lines), the answer appended, and the
        server asked to echo the log-probability of every prompt token.
        """
        text = render_chat(messages, self.logprob_template) + continuation
        return await self._ask(
            self.info.model,
            lambda: self.client.completions.create(
                model=self.info.model, prompt=text, max_tokens=1, temperature=0, echo=True, logprobs=1
            ),
            lambda resp: self._echoed(resp, continuation),
        )

    def _echoed(self, resp, continuation: str) -> TokenLogprobs:
        """The continuation's log-probabilities, cut out of an echoed completion."""
        choice = _first_choice(resp)
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
            completion_tokens=max(1, generated),
        )

    async def aclose(self) -> None:
        await self.client.close()

    async def _ask(self, model: str, send, parse):
        """`parse(await send())`: one request, the SDK's retries of what HTTP told it failed included.

        A broken 200 (see the module docstring) raises BrokenAnswer: the
        evaluator asks again, booking each attempt in the budget.
        """
        try:
            resp = await send()
            if isinstance(resp, str):  # the SDK hands back a body that is not JSON as text
                raise _Malformed(f"malformed JSON (not JSON at all: {_short(resp, 60)!r})")
            return parse(resp)
        except self._openai.OpenAIError as exc:
            raise self._explain(exc, model) from None
        except json.JSONDecodeError:
            problem = "malformed JSON (truncated or invalid)"
        except (_Malformed, ValueError, AttributeError) as exc:
            # ValueError / AttributeError: the SDK's own post-processing of a
            # broken body ("No embedding data received", a str without .data).
            problem = str(exc) if isinstance(exc, _Malformed) else f"a malformed answer ({_short(str(exc), 80)})"
        raise BrokenAnswer(problem, self.url)

    def _explain(self, exc: Exception, model: str) -> BackendError:
        """Turn an SDK exception (raised after its own retries) into an actionable sentence."""
        o = self._openai
        tries = f"after {self.max_retries + 1} attempts"
        transient = True
        # A status the SDK does not retry (400, 401, 403, 404, 422): the request was refused, not run.
        unbilled = isinstance(exc, o.APIStatusError) and exc.status_code < 500 and exc.status_code not in (408, 409, 429)
        if isinstance(exc, o.APITimeoutError):
            msg = f"no answer from {self.url} within {self.timeout:g} s ({tries}); check the server or raise --timeout"
        elif isinstance(exc, o.APIConnectionError) and _never_connected(exc):
            msg = f"could not reach {self.url} ({tries}): is the server running and the --base-url right?"
        elif isinstance(exc, o.APIConnectionError):
            msg = (
                f"connection dropped: {self.url} closed it without an answer ({tries}); check the "
                "server's log (did it crash or run out of memory?), lower --concurrency or raise --max-retries"
            )
        elif isinstance(exc, o.RateLimitError):
            msg = f"{self.url} kept rate-limiting (HTTP 429) {tries}: lower --concurrency, set --rpm or raise --max-retries"
        elif isinstance(exc, o.APIStatusError) and (exc.status_code >= 500 or exc.status_code in (408, 409)):
            msg = (
                f"HTTP {exc.status_code} from {self.url} {tries}: {_short(exc.message)}; the server is "
                "failing or overloaded: try again later, lower --concurrency or raise --max-retries"
            )
        else:
            transient = False
            if isinstance(exc, o.AuthenticationError):
                msg = f"{self.url} rejected the API key (401): check OPENAI_API_KEY"
            elif isinstance(exc, o.NotFoundError):
                msg = f"model {model!r} was not found at {self.url}: check --model (and --embed-model)"
            elif isinstance(exc, o.APIStatusError):
                msg = f"{self.url} answered HTTP {exc.status_code}: {_short(exc.message)}"
            else:
                msg = f"{type(exc).__name__} talking to {self.url}: {_short(str(exc))}"
        return self._error(msg, transient=transient, unbilled=unbilled)

    def _error(self, message: str, *, transient: bool, unbilled: bool = False) -> BackendError:
        """A BackendError whose message never repeats the API key."""
        if self._secret:
            message = message.replace(self._secret, "***")
        return BackendError(message, transient=transient, unbilled=unbilled)


def valid_unicode(text: str) -> str:
    """The answer with any lone surrogate (JSON allows "\\ud800") replaced by U+FFFD.

    Python decodes such JSON without complaint, but no run file, cache key or
    widget message can carry it: one odd answer would crash the whole run.
    """
    return _SURROGATE.sub("\ufffd", text)


def render_chat(messages: list[dict], template: str) -> str:
    """The conversation as one completion prompt, ending where the answer starts."""
    if template == "plain":
        return "\n\n".join(m["content"] for m in messages) + "\n\n"
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _first_choice(resp):
    if not getattr(resp, "choices", None):
        raise _Malformed("an answer with no choices")
    return resp.choices[0]


def _never_connected(exc: Exception) -> bool:
    """Whether the SDK's connection error happened before anything was sent (refused, DNS).

    httpx raises ConnectError then, and RemoteProtocolError / ReadError once
    an open connection breaks; matched by name, since the SDK may bundle
    its own copy of httpx.
    """
    return any(cls.__name__ == "ConnectError" for cls in type(exc.__cause__).__mro__)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
