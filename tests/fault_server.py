"""A loopback OpenAI-compatible server that injects faults, for the test suite.

Standard library only: a ThreadingHTTPServer on 127.0.0.1 (a free port) in a
background thread. Its "model" answers like FakeBackend: the capitalised
words of the prompt, with hashed bag-of-words embeddings, so a test can
plant a culprit and compare a faulty run with a clean one exactly.

Whether a request meets a fault, and which, is a pure function of the seed,
the endpoint, the request body and the attempt number for that body (how
many times the server has seen that exact body), so the order in which
concurrent requests arrive changes nothing and a test is reproducible.

    server = FaultServer().start()
    server.configure(rate=0.3, kinds=["http_503", "timeout"], transient_for=3)
    server.configure(permanent="dropped")      # every request meets that fault
    server.url, server.stats.faults, server.stats.authorizations

It can also bill like a server whose chat template adds tokens of its own
(role markers, a default system prompt): `FaultServer(extra_tokens=40)`
adds 40 prompt tokens to the `usage` of every answer, `extra_tokens_per_message`
that many more per chat message (per input text for embeddings, per prompt
for completions). `server.stats.billed` lists the usage of every answer the
server produced, so a test can count what a run cost on the server's side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prompt_attr_widget.backends.fake import _bag_of_words

MODEL = "srv"
DIM = 64  # the embedding size; the `wrong_dim` fault answers half of it
CHAT, EMBED, COMPLETE = "/v1/chat/completions", "/v1/embeddings", "/v1/completions"
FAULT_KINDS = (
    "rate_limit",  # 429 with Retry-After and retry-after-ms
    "http_500",
    "http_502",
    "http_503",  # with retry-after-ms, as overloaded servers send it
    "timeout",  # no answer for hang_s (longer than the client's timeout), then a closed socket
    "dropped",  # the socket closed with no response at all
    "truncated_json",  # application/json cut in the middle
    "malformed_json",  # 200 with an HTML page, as a misconfigured proxy answers
    "empty_choices",  # valid JSON with "choices": [] (embeddings: "data": [])
    "wrong_dim",  # embeddings of DIM // 2 numbers (embeddings only)
    "slow",  # a correct answer after slow_s (shorter than the client's timeout)
)
# Answers that are well-formed but odd: never drawn by default, only when asked for.
ODD_ANSWERS = ("lone_surrogate",)  # a chat answer holding "\ud800" (valid JSON, invalid Unicode)
_ONLY_FOR = {"wrong_dim": {EMBED}, "lone_surrogate": {CHAT}}
_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]+")


@dataclass(frozen=True)
class Faults:
    """What the server does wrong; change it with FaultServer.configure(...)."""

    rate: float = 0.0  # share of attempts that meet a fault
    kinds: tuple[str, ...] = FAULT_KINDS  # drawn from, among those that apply to the endpoint
    permanent: str | None = None  # this kind on every request it applies to (rate ignored)
    transient_for: int | None = None  # only a body's first N attempts can fail (None: any)
    seed: int = 0
    retry_after_ms: int = 5
    hang_s: float = 3.0
    slow_s: float = 0.2

    def __post_init__(self):
        object.__setattr__(self, "kinds", tuple(self.kinds))  # a list is welcome too
        unknown = {*self.kinds, self.permanent} - {*FAULT_KINDS, *ODD_ANSWERS, None}
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")


@dataclass(frozen=True)
class Served:
    """One request as the server saw it."""

    path: str
    body_sha: str
    attempt: int  # 0 for the first time this body reached this endpoint
    fault: str | None
    at: float  # time.monotonic() when it arrived


@dataclass(frozen=True)
class Billing:
    """Prompt tokens the server bills beyond the text it was sent, as a chat template does."""

    extra_tokens: int = 0  # per request
    extra_tokens_per_message: int = 0  # per chat message, embeddings input or completions prompt

    def extra(self, parts: int) -> int:
        return self.extra_tokens + self.extra_tokens_per_message * parts


@dataclass(frozen=True)
class Billed:
    """The usage of one answer the server produced (what a metered server charges for)."""

    path: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Stats:
    faults: Counter = field(default_factory=Counter)  # fault kind -> times served
    ok: int = 0  # well-formed answers (slow ones included)
    authorizations: list[str] = field(default_factory=list)  # every Authorization header seen
    requests: list[Served] = field(default_factory=list)
    billed: list[Billed] = field(default_factory=list)  # every answer produced, broken ones too

    def cost(self, price, embed_price) -> float:
        """USD of everything billed: chat and completions at `price`, embeddings at `embed_price`."""
        total = 0.0
        for b in self.billed:
            p = embed_price if b.path == EMBED else price
            total += (b.prompt_tokens * p.input + b.completion_tokens * p.output) / 1_000_000
        return total


class FaultServer:
    def __init__(self, *, logprobs: bool = False, extra_tokens: int = 0, extra_tokens_per_message: int = 0, **faults):
        """`logprobs`: answer /v1/completions with echoed log-probs; else 404 (embedding scorer).
        `extra_tokens`, `extra_tokens_per_message`: see Billing."""
        self.logprobs = logprobs
        self.faults = Faults(**faults)
        self.billing = Billing(extra_tokens, extra_tokens_per_message)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.reset()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fault-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def stats(self) -> Stats:
        """A snapshot, safe to read while requests are still being served."""
        with self._lock:
            return dataclasses.replace(
                self._stats,
                faults=Counter(self._stats.faults),
                authorizations=list(self._stats.authorizations),
                requests=list(self._stats.requests),
                billed=list(self._stats.billed),
            )

    def configure(self, **changes) -> FaultServer:
        """Change the faults from now on (any field of Faults); thread-safe, usable mid-run."""
        with self._lock:
            self.faults = dataclasses.replace(self.faults, **changes)
        return self

    def bill(self, **changes) -> FaultServer:
        """Change the billing from now on (extra_tokens, extra_tokens_per_message); thread-safe."""
        with self._lock:
            self.billing = dataclasses.replace(self.billing, **changes)
        return self

    def reset(self) -> None:
        """Forget attempt numbers and statistics: the next run meets the same faults again."""
        with self._lock:
            self._attempts: Counter = Counter()
            self._stats = Stats()

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases requests hanging in a `timeout` fault
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def pause(self, seconds: float) -> None:
        """Sleep in a request thread, but wake at once when the server stops."""
        self._stopping.wait(seconds)

    def admit(self, path: str, body: bytes, authorization: str | None) -> tuple[Served, Faults]:
        """Number this attempt, choose its fault and record it."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            attempt = self._attempts[path, digest]
            self._attempts[path, digest] += 1
            faults = self.faults
            served = Served(path, digest, attempt, choose_fault(faults, path, body, attempt), time.monotonic())
            self._stats.requests.append(served)
            if authorization is not None:
                self._stats.authorizations.append(authorization)
            if served.fault:
                self._stats.faults[served.fault] += 1
        return served, faults

    def count_ok(self) -> None:
        with self._lock:
            self._stats.ok += 1

    def record_billed(self, path: str, usage: dict) -> None:
        with self._lock:
            self._stats.billed.append(Billed(path, usage["prompt_tokens"], usage.get("completion_tokens", 0)))


def choose_fault(faults: Faults, path: str, body: bytes, attempt: int) -> str | None:
    """The fault for this attempt: a pure function of its arguments."""
    if faults.permanent:
        return faults.permanent if path in _ONLY_FOR.get(faults.permanent, {path}) else None
    if faults.transient_for is not None and attempt >= faults.transient_for:
        return None
    kinds = [k for k in faults.kinds if path in _ONLY_FOR.get(k, {path})]
    digest = hashlib.sha256(f"{faults.seed}|{path}|{attempt}|".encode() + body).digest()
    if not kinds or int.from_bytes(digest[:8], "big") / 2**64 >= faults.rate:
        return None
    return kinds[int.from_bytes(digest[8:16], "big") % len(kinds)]


@contextlib.contextmanager
def serve(**options):
    """A started FaultServer, stopped on exit."""
    server = FaultServer(**options).start()
    try:
        yield server
    finally:
        server.stop()


# ---- answers -------------------------------------------------------------


def chat_answer(request: dict, empty: bool, odd: bool = False, billing: Billing = Billing()) -> dict:
    """FakeBackend's model: the capitalised words (longer than 2 letters) of the prompt."""
    prompt = "\n".join(m.get("content") or "" for m in request.get("messages", []))
    words = [w for w in _WORD.findall(prompt) if w[:1].isupper() and len(w) > 2]
    text = " ".join(words[: request.get("max_tokens") or 128]) or "(nothing)"
    if odd:
        text += " \ud800"  # json.dumps escapes it; the client decodes a lone surrogate
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    extra = billing.extra(len(request.get("messages", [])))
    usage = {"prompt_tokens": max(1, len(prompt) // 4) + extra, "completion_tokens": len(text.split())}
    return _envelope("chat.completion", request, [] if empty else [choice], usage)


def embeddings_answer(request: dict, empty: bool, wrong_dim: bool, billing: Billing = Billing()) -> dict:
    texts = request.get("input")
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    size = DIM // 2 if wrong_dim else DIM
    data = [
        {"object": "embedding", "index": i, "embedding": _bag_of_words(t)[:size]} for i, t in enumerate(texts)
    ]
    tokens = sum(len(t) // 4 + 1 for t in texts) + billing.extra(len(texts))
    return {
        "object": "list",
        "model": request.get("model", MODEL),
        "data": [] if empty else data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def echo_answer(request: dict, empty: bool, billing: Billing = Billing()) -> dict:
    """Echoed prompt log-probs like FakeBackend's: a word is likely (-0.05) if it occurred before."""
    prompt = request.get("prompt") or ""
    tokens = [*_TOKEN.findall(prompt), "."]  # the prompt, then one generated token
    seen: set[str] = set()
    values: list[float | None] = []
    for i, token in enumerate(tokens):
        word = token.lower()
        values.append(None if i == 0 else (-0.05 if word in seen else -3.0) if _WORD.fullmatch(token) else -0.5)
        seen.add(word)
    choice = {
        "index": 0,
        "text": "".join(tokens),
        "finish_reason": "length",
        "logprobs": {"tokens": tokens, "token_logprobs": values, "top_logprobs": None, "text_offset": None},
    }
    usage = {"prompt_tokens": len(tokens) - 1 + billing.extra(1), "completion_tokens": 1}
    return _envelope("text_completion", request, [] if empty else [choice], usage)


def _envelope(kind: str, request: dict, choices: list, usage: dict) -> dict:
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": f"{kind}-1",
        "object": kind,
        "created": 0,
        "model": request.get("model", MODEL),
        "system_fingerprint": "fault-server-1",
        "choices": choices,
        "usage": usage,
    }


# ---- HTTP ------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up (after its own timeout) is expected here, not news."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        owner: FaultServer = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        served, faults = owner.admit(self.path, body, self.headers.get("Authorization"))
        if self._fault(served.fault, faults):
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self._error(400, "the request body is not JSON")
            return
        answer = self._answer(request, served.fault)
        if answer is not None:
            owner.record_billed(self.path, answer["usage"])  # produced, so billed, whatever reaches the client
            self._json(200, answer, truncate=served.fault == "truncated_json")
            if served.fault in (None, "slow"):
                owner.count_ok()

    def _answer(self, request: dict, fault: str | None) -> dict | None:
        """The endpoint's answer, or None once an error has been sent."""
        empty = fault == "empty_choices"
        billing = self.server.owner.billing
        if self.path == CHAT:
            return chat_answer(request, empty, odd=fault == "lone_surrogate", billing=billing)
        if self.path == EMBED:
            return embeddings_answer(request, empty, fault == "wrong_dim", billing)
        if self.path == COMPLETE and self.server.owner.logprobs:
            return echo_answer(request, empty, billing)
        self._error(404, f"no route {self.path} (this server has no completions endpoint)")
        return None

    def _fault(self, fault: str | None, faults: Faults) -> bool:
        """Send a fault that replaces the answer; True if one was sent."""
        if fault == "slow":
            self.server.owner.pause(faults.slow_s)
        elif fault == "rate_limit":
            self._error(429, "rate limit reached", self._retry_after(faults))
        elif fault in ("http_500", "http_502", "http_503"):
            status = int(fault[-3:])
            self._error(status, "fault server error", self._retry_after(faults) if status == 503 else {})
        elif fault in ("timeout", "dropped"):
            if fault == "timeout":
                self.server.owner.pause(faults.hang_s)
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have given up and closed it
                self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "malformed_json":
            self._send(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")
        else:
            return False
        return fault != "slow"

    @staticmethod
    def _retry_after(faults: Faults) -> dict:
        return {
            "Retry-After": str(max(1, math.ceil(faults.retry_after_ms / 1000))),
            "retry-after-ms": str(faults.retry_after_ms),
        }

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": "fault_server", "code": status}}, headers=headers)

    def _json(self, status: int, payload: dict, *, truncate: bool = False, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self._send(status, data[: len(data) // 2] if truncate else data, "application/json", headers)

    def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away
