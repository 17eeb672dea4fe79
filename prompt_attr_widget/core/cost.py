"""Token counts and call prices: the rules the cost guardrail is built on.

Two token counts serve two purposes. The *estimate* (about four characters
per token, a few tokens a message) projects the typical spend of a run
before the first call, for the refusal message: it is an estimate, never a
limit. The *bound* is what a call may be billed at most, booked before the
call is made: one token per UTF-8 byte of the text sent (no byte-level BPE
tokenizer, nor SentencePiece with byte fallback, produces more) plus what
the server's chat template adds, which the text sent does not show.

A template's tokens are billed too: llama.cpp's server billed 44-46 prompt
tokens for a 16-byte prompt. Before a server's first response they are
bounded by the conservative overheads below; after it, by what the server
is seen to bill (engine/budget.py, `Calibration`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import Price

# The estimate's overheads (projections only): OpenAI documents about 3 tokens
# a message and 3 to prime the reply.
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_OVERHEAD_TOKENS = 3

# The bound's overheads before a server has answered once. A message: ChatML
# (llama.cpp's default, Qwen, SmolLM2) wraps one in "<|im_start|>role\n" and
# "<|im_end|>\n", 5 tokens with the role; Llama 3's header and <|eot_id|> are
# 5, Gemma's turn markers 5, OpenAI about 4; 16 also covers markers sent as
# plain text (a prompt rendered for the completions endpoint). A request:
# a BOS token, the reply's opening ("<|im_start|>assistant\n", 3 tokens) and
# a system prompt the template inserts by itself when the request has none:
# SmolLM2's is 20 tokens ("You are a helpful AI assistant named SmolLM,
# trained by Hugging Face", 30 in all with its markers and the reply's),
# Llama 3.1's date header about 25, Qwen 2.5's about 20.
BOUND_MESSAGE_TOKENS = 16
BOUND_CALL_TOKENS = 64

# Once a server has answered: the largest overhead it was seen to bill, this
# much larger, plus this many tokens.
CALIBRATION_FACTOR = 1.25
CALIBRATION_MARGIN_TOKENS = 8


def estimate_tokens(text: str) -> int:
    """A typical token count (about four characters a token), for projections."""
    return max(1, math.ceil(len(text) / 4))


def bound_tokens(text: str) -> int:
    """An upper bound on the token count of the text itself: no tokenizer exceeds one token a byte."""
    return len(text.encode("utf-8", "surrogatepass"))


def messages_tokens(messages: list[dict], *, bound: bool) -> int:
    """A chat request's prompt tokens: estimated (bound=False), or at most, before any response (True)."""
    if bound:
        return BOUND_CALL_TOKENS + sum(BOUND_MESSAGE_TOKENS + bound_tokens(m["content"]) for m in messages)
    return REPLY_OVERHEAD_TOKENS + sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(m["content"]) for m in messages)


@dataclass(frozen=True)
class Request:
    """What bounds one billed request: its kind, its form, the bytes it sends and its output cap.

    `form` names the parts a template wraps (the roles of the messages; one
    "input" per embedded text): requests of one kind and form get the same
    template tokens, whatever their text.
    """

    kind: str  # "chat", "logprob" or "embed"
    form: tuple[str, ...]
    content_bytes: int
    max_output: int  # tokens it may generate: max_tokens, 1 for a scoring call, 0 for embeddings

    @property
    def parts(self) -> int:
        return len(self.form)

    def conservative_tokens(self) -> tuple[int, int]:
        """(prompt, output) tokens at most, before the server has answered a request of this kind."""
        return self.content_bytes + BOUND_CALL_TOKENS + BOUND_MESSAGE_TOKENS * self.parts, self.max_output


def chat_request(messages: list[dict], max_tokens: int) -> Request:
    return Request("chat", tuple(m["role"] for m in messages), sum(bound_tokens(m["content"]) for m in messages), max_tokens)


def logprob_request(messages: list[dict], continuation: str) -> Request:
    """A scoring call: the conversation and the answer, rendered as one prompt, one token generated."""
    content = sum(bound_tokens(m["content"]) for m in messages) + bound_tokens(continuation)
    return Request("logprob", (*(m["role"] for m in messages), "answer"), content, 1)


def embed_request(texts: list[str]) -> Request:
    return Request("embed", ("input",) * len(texts), sum(max(1, bound_tokens(t)) for t in texts), 0)


def call_cost(price: Price | None, prompt_tokens: int, completion_tokens: int = 0) -> float | None:
    """USD for one call, or None when the price is unknown."""
    if price is None:
        return None
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
