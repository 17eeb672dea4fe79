"""Integration tests against a real OpenAI-compatible server on 127.0.0.1.

A session fixture starts llama-cpp-python's server (`python -m
llama_cpp.server --config_file CFG`) serving the embedded SmolLM2 GGUF
under three aliases, and prompt_attr talks to it through the official
`openai` client, exactly as it would talk to vLLM, Ollama or OpenAI.

Server facts these tests rely on (llama-cpp-python 0.3.x, llama_cpp/server/):
- ModelSettings has no `pooling_type` field (and forbids extra fields), so a
  mean-pooled embedding model is configured through a GGUF metadata
  override: kv_overrides ["llama.pooling_type=int:1"] (1 = mean). Without it
  a causal LM embeds with pooling "none": one vector per token.
- LlamaProxy keeps one model loaded at a time and swaps on demand, and the
  server serialises requests behind one lock, so "concurrent" calls queue.
- An unknown model name is not an error: LlamaProxy falls back to the first
  model of the config (here the chat alias).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

import prompt_attr
from prompt_attr import BackendError, BudgetRefused, Price, UsageError
from prompt_attr_widget.backends.base import GenerationParams
from prompt_attr_widget.backends.openai import OpenAIBackend

CANARY_KEY = "sk-canary-123456"
CANARY_PASSWORD = "pw-canary-789"
READY_DEADLINE_S = 120
# The server answers one request at a time, so a request's time includes the
# queue behind the others; be generous, a shared CI core can be slow.
TIMEOUT_S = 300

PROMPT = """### Role
You are a helpful travel assistant for a small tour company.

### Facts
The Eiffel Tower is in Paris. It opens at 9 am and tickets cost 29 euros.

### Style
Always answer in French.

### Audience
The reader is a ten-year-old child visiting Paris for the first time.

### Question
When does the Eiffel Tower open, and how much is a ticket?
"""

SHORT_PROMPT = "The Eiffel Tower is in Paris. It opens at 9 am. When does it open?"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Server:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _free_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _server_config(port: int) -> dict:
    from prompt_attr_widget.backends.local import embedded_model_path

    model = str(embedded_model_path())
    common = {"model": model, "n_ctx": 2048, "n_threads": 2, "n_threads_batch": 2, "verbose": False}
    return {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            # First = the default that unknown model names fall back to.
            {**common, "model_alias": "smollm2", "chat_format": None},
            {**common, "model_alias": "smollm2-embed", "embedding": True,
             "kv_overrides": ["llama.pooling_type=int:1"]},
            # Pooling "none": per-token vectors, which prompt_attr must reject clearly.
            {**common, "model_alias": "smollm2-tokens", "embedding": True},

        ],
    }


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    folder = tmp_path_factory.mktemp("llama_server")
    port = _free_port()
    config = folder / "config.json"
    config.write_text(json.dumps(_server_config(port), indent=1))
    log = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_FILE", "OPENAI_API_KEY")}
    env.update(HOST="127.0.0.1", PORT=str(port))  # the server lets HOST/PORT override the file
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prompt_attr_widget.backends.llama_server", "--config_file", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = Server(port, proc, log)
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
            try:
                with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as resp:
                    ids = {m["id"] for m in json.load(resp)["data"]}
                if {"smollm2", "smollm2-embed", "smollm2-tokens"} <= ids:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready after {READY_DEADLINE_S} s:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.25)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _grep_tree(folder: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{needle!r} in {path}" for needle in needles if needle.encode() in data]
    return hits


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.server
def test_attribute_through_server(llama_server, runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    # The key from the environment really is the one the client sends.
    assert OpenAIBackend("smollm2", base_url=llama_server.base_url).client.api_key == CANARY_KEY
    # Credentials in the URL must be used for the request but never stored.
    url_with_password = f"http://alice:{CANARY_PASSWORD}@127.0.0.1:{llama_server.port}/v1"
    run = prompt_attr.attribute(
        PROMPT,
        model="smollm2",
        base_url=url_with_password,
        embed_model="smollm2-embed", scorer="embedding",
        runs_dir=runs_dir,
        max_tokens=32,
        concurrency=4,
        timeout=TIMEOUT_S,
    )
    rec = run.record
    assert run.status == "finished", rec.reason
    assert run.baseline and run.baseline.strip()
    assert 0 < rec.baseline.completion_tokens <= 32
    assert sorted(s.index for s in rec.attribution) == list(range(len(run.spans)))
    assert len(run.spans) >= 5
    for span in run.spans:
        assert math.isfinite(span.score) and 0.0 <= span.score <= 1.0
    assert any(ev.output != run.baseline for ev in rec.evaluations)  # the embeddings were used
    assert rec.backend.backend == "openai"
    assert rec.scorer == "embedding"
    assert rec.noise.repeats == 3 and len(rec.noise.samples) == 3  # remote: the baseline is asked 3 times
    assert rec.backend.model == "smollm2" and rec.backend.embed_model == "smollm2-embed"
    assert rec.backend.base_url == llama_server.base_url
    assert rec.config["base_url"] == llama_server.base_url
    assert rec.config["concurrency"] == 4
    # Self-hosted: no known price, so spend is unknown rather than a made-up $0.
    assert rec.spend.usd is None and rec.projected_usd is None
    assert rec.spend.calls > 0 and rec.spend.prompt_tokens > 0 and rec.spend.embed_tokens > 0
    assert all(ev.cost_usd is None for ev in rec.evaluations)
    assert prompt_attr.load_run(run.run_id, runs_dir=runs_dir) == run

    cache = tmp_path / "cache"
    run_files = [p.name for p in (runs_dir / run.run_id).iterdir()]
    assert {"run.json", "events.jsonl"} <= set(run_files)
    assert any(p.is_file() for p in cache.rglob("*")), "the call cache was not written"
    assert _grep_tree(runs_dir, [CANARY_KEY, CANARY_PASSWORD, "alice"]) == []
    assert _grep_tree(cache, [CANARY_KEY, CANARY_PASSWORD, "alice"]) == []


@pytest.mark.server
def test_backend_complete_and_embed(llama_server):
    from prompt_attr_widget.backends.local import LocalBackend

    texts = ["Paris is the capital of France.", "Bonjour tout le monde", "The cat sat on the mat."]

    async def go():
        backend = OpenAIBackend("smollm2", base_url=llama_server.base_url, embed_model="smollm2-embed", timeout=TIMEOUT_S)
        try:
            params = GenerationParams(max_tokens=8, temperature=0.0, seed=42)
            first = await backend.complete(MESSAGES, params)
            second = await backend.complete(MESSAGES, params)
            emb = await backend.embed(texts)
            return first, second, emb
        finally:
            await backend.aclose()

    first, second, emb = asyncio.run(go())
    assert first.text.strip()
    assert first.prompt_tokens > 0 and 0 < first.completion_tokens <= 8
    assert first.finish_reason in ("stop", "length")
    assert second.text == first.text  # temperature 0 and a seed: the server is deterministic

    assert len(emb.vectors) == len(texts) and emb.prompt_tokens > 0
    assert {len(v) for v in emb.vectors} == {576}  # SmolLM2-135M's hidden size: one pooled vector a text
    assert all(math.isfinite(x) for v in emb.vectors for x in v)
    # Served mean-pooled embeddings match the embedded backend's mean pooling of the same GGUF.
    local = asyncio.run(LocalBackend().embed(texts))
    for served, own in zip(emb.vectors, local.vectors, strict=True):
        assert _cosine(served, own) == pytest.approx(1.0, abs=1e-3)
    assert _cosine(emb.vectors[0], emb.vectors[2]) < 0.99  # different texts, different vectors


@pytest.mark.server
def test_unpooled_embeddings_are_a_clear_error(llama_server, runs_dir):
    async def go():
        backend = OpenAIBackend("smollm2", base_url=llama_server.base_url, embed_model="smollm2-tokens", timeout=TIMEOUT_S)
        try:
            return await backend.embed(["hello world", "a b c"])
        finally:
            await backend.aclose()

    with pytest.raises(BackendError, match="malformed embeddings from http://127.0.0.1:.*pooling"):
        asyncio.run(go())

    # Through attribute(): the run ends as failed with that sentence, not a TypeError.
    run = prompt_attr.attribute(
        SHORT_PROMPT,
        model="smollm2",
        base_url=llama_server.base_url,
        embed_model="smollm2-tokens", scorer="embedding",
        runs_dir=runs_dir,
        max_tokens=8,
        timeout=TIMEOUT_S,
    )
    assert run.status == "failed"
    assert "malformed embeddings" in run.record.reason and "pooling" in run.record.reason


@pytest.mark.server
def test_unknown_model_names(llama_server, runs_dir):
    # llama-cpp-python's LlamaProxy maps an unknown chat model name to its default
    # (first) model instead of answering 404, so "no-such-model" silently gets the
    # smollm2 answer. An unknown *embedding* name also falls back to that chat
    # model, which was not loaded with embedding=True: HTTP 500, which the client
    # retries and prompt_attr then reports with the URL and the server's reason.
    async def go():
        known = OpenAIBackend("smollm2", base_url=llama_server.base_url, timeout=TIMEOUT_S)
        unknown = OpenAIBackend(
            "no-such-model", base_url=llama_server.base_url, embed_model="no-such-embedder", timeout=TIMEOUT_S
        )
        try:
            params = GenerationParams(max_tokens=8)
            a = await known.complete(MESSAGES, params)
            b = await unknown.complete(MESSAGES, params)
            with pytest.raises(BackendError) as err:
                await unknown.embed(["hello"])
            return a, b, str(err.value)
        finally:
            await known.aclose()
            await unknown.aclose()

    known_answer, unknown_answer, embed_error = asyncio.run(go())
    assert unknown_answer.text == known_answer.text
    assert llama_server.base_url in embed_error and "HTTP 500" in embed_error and "embedding=True" in embed_error

    # Through attribute(): without --embed-model a self-hosted server is asked to
    # embed with the chat model's name; the run fails and says why, it does not crash.
    run = prompt_attr.attribute(
        SHORT_PROMPT, model="smollm2", base_url=llama_server.base_url, runs_dir=runs_dir, max_tokens=8,
        timeout=TIMEOUT_S, scorer="embedding",
    )
    assert run.status == "failed"
    assert llama_server.base_url in run.record.reason and "HTTP 500" in run.record.reason
    assert run.record.baseline is None


@pytest.mark.server
def test_budget_needs_a_price(llama_server, runs_dir):
    with pytest.raises(UsageError, match=r"no known price.*price=Price"):
        prompt_attr.attribute(
            SHORT_PROMPT,
            model="smollm2",
            base_url=llama_server.base_url,
            embed_model="smollm2-embed", scorer="embedding",
            runs_dir=runs_dir,
            max_tokens=16,
            budget=1.0,
        )
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # refused before any call

    with pytest.raises(BudgetRefused):
        prompt_attr.attribute(
            SHORT_PROMPT,
            model="smollm2",
            base_url=llama_server.base_url,
            embed_model="smollm2-embed", scorer="embedding",
            runs_dir=runs_dir,
            max_tokens=16,
            budget=1e-9,
            price=Price(input=1, output=1),
        )


@pytest.mark.server
def test_budget_with_a_given_price(llama_server, runs_dir):
    budget = 0.01
    run = prompt_attr.attribute(
        SHORT_PROMPT,
        model="smollm2",
        base_url=llama_server.base_url,
        embed_model="smollm2-embed", scorer="embedding",
        runs_dir=runs_dir,
        max_tokens=16,
        budget=budget,
        price=Price(input=1, output=1),
        timeout=TIMEOUT_S,
    )
    rec = run.record
    assert run.status == "finished", rec.reason
    assert isinstance(rec.spend.usd, float) and 0 < rec.spend.usd <= budget
    assert rec.projected_usd is not None and rec.projected_usd <= budget
    calls = [rec.baseline, *rec.evaluations]
    assert all(c.cost_usd is not None for c in calls)
    assert rec.spend.usd == pytest.approx(sum(c.cost_usd for c in calls), rel=1e-9)
    # $1 per million tokens either way: the spend is the token count over a million.
    tokens = rec.spend.prompt_tokens + rec.spend.completion_tokens + rec.spend.embed_tokens
    assert rec.spend.usd == pytest.approx(tokens / 1_000_000, rel=1e-9)


class UsageProxy:
    """A loopback reverse proxy in front of the server that records the `usage` of every answer.

    What the server itself reported, request by request, whatever the client made of it: the
    bill a metered server would send.
    """

    def __init__(self, upstream: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.usage: list[tuple[str, int, int]] = []  # (path, prompt_tokens, completion_tokens)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                request = urllib.request.Request(upstream + self.path, data=body, method=method,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                        status, data = resp.status, resp.read()
                except urllib.error.HTTPError as err:
                    status, data = err.code, err.read()
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    usage = json.loads(data).get("usage")
                    if usage:
                        proxy.usage.append((self.path, usage["prompt_tokens"], usage.get("completion_tokens", 0)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def cost(self, price: Price, embed_price: Price) -> float:
        total = 0.0
        for path, prompt_tokens, completion_tokens in self.usage:
            p = embed_price if path.endswith("/embeddings") else price
            total += (prompt_tokens * p.input + completion_tokens * p.output) / 1_000_000
        return total

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.mark.server
def test_budget_holds_by_the_servers_own_usage(llama_server, runs_dir):
    """llama.cpp's server bills its chat template's tokens: SmolLM2's inserts a default system
    prompt, about 30 tokens beyond a short prompt's bytes. A run stopped by its budget was
    billed, by the usage the server itself reported, no more than the budget."""
    prompt = "Ann. Bob. Eve. Kim. Lou. Max."
    price, embed_price = Price(input=10, output=10), Price(input=10)
    proxy = UsageProxy(f"http://127.0.0.1:{llama_server.port}")
    options = dict(
        model="smollm2", base_url=proxy.base_url, embed_model="smollm2-embed", scorer="embedding",
        runs_dir=runs_dir, max_tokens=8, price=price, embed_price=embed_price, timeout=TIMEOUT_S,
        method="loo", faithfulness="off", concurrency=4, cache=False,
    )
    try:
        with pytest.raises(BudgetRefused) as refused:
            prompt_attr.attribute(prompt, budget=0, **options)
        assert proxy.usage == []  # refused before any request
        budget = refused.value.projected_usd * 1.2  # passes the projection, an estimate; the template does not
        run = prompt_attr.attribute(prompt, budget=budget, **options)
        billed = proxy.cost(price, embed_price)
        chats = [u for u in proxy.usage if u[0].endswith("/chat/completions")]
    finally:
        proxy.stop()
    rec = run.record
    assert run.status == "aborted" and rec.stopped_by == "budget", rec.reason
    assert chats and min(tokens for _, tokens, _ in chats) > 30  # the template's tokens were billed
    assert billed <= budget, (billed, budget)
    assert rec.spend.usd == pytest.approx(billed, rel=1e-9)  # the run counted exactly what the server billed
    print(f"budget, llama.cpp server: budget {budget:.6f}, billed by the server {billed:.6f} "
          f"({billed / budget:.1%}), {len(chats)} chat calls of {min(t for _, t, _ in chats)}-"
          f"{max(t for _, t, _ in chats)} prompt tokens for prompts of at most {len(prompt)} bytes")


def _closed_port(host: str, family: int) -> int:
    return _free_port(host, family)  # bound then released: nothing listens there


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.server
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_unreachable_server_fails_fast_naming_the_url(host, runs_dir, monkeypatch):
    if host == "[::1]" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    url = f"http://{host}:{_closed_port(host.strip('[]'), family)}/v1"
    start = time.monotonic()
    run = prompt_attr.attribute(
        SHORT_PROMPT, model="smollm2", base_url=url, embed_model="smollm2-embed", scorer="embedding", runs_dir=runs_dir, max_tokens=8
    )
    elapsed = time.monotonic() - start
    assert run.status == "failed"
    assert f"could not reach {url}" in run.record.reason
    assert run.record.backend.base_url == url
    assert elapsed < 30, f"took {elapsed:.1f} s to give up on a closed port"
    assert CANARY_KEY not in (runs_dir / run.run_id / "run.json").read_text("utf-8")

    async def direct():
        backend = OpenAIBackend("smollm2", base_url=url, max_retries=0)
        try:
            await backend.complete(MESSAGES, GenerationParams(max_tokens=8))
        finally:
            await backend.aclose()

    with pytest.raises(BackendError, match=re.escape(f"could not reach {url}")):
        asyncio.run(direct())


LOGPROB_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "The conference takes place in Lyon. Where is the conference?"},
]


@pytest.mark.server
def test_served_log_probabilities_equal_the_embedded_models(llama_server):
    """Same GGUF, same ChatML text: the echoed log-probs are the local teacher-forced ones."""
    from prompt_attr_widget.backends.local import LocalBackend

    answer = "The conference takes place in Lyon."

    async def go():
        remote = OpenAIBackend("smollm2", base_url=llama_server.base_url)
        try:
            assert await remote.supports_logprob() is True  # probed: echo + logprobs on /completions
            return await remote.logprob(LOGPROB_MESSAGES, answer)
        finally:
            await remote.aclose()

    served = asyncio.run(go())
    local = asyncio.run(LocalBackend().logprob(LOGPROB_MESSAGES, answer))
    assert served.offsets == local.offsets and len(served.logprobs) == 7
    assert served.logprobs == pytest.approx(local.logprobs, abs=1e-3)
    assert answer[served.offsets[-2] :].startswith(" Lyon")


@pytest.mark.server
def test_target_attribution_through_server_uses_log_probabilities(llama_server, runs_dir):
    prompt = "The conference takes place in Lyon.\nWe sell bikes.\nWhere is the conference?"
    run = prompt_attr.attribute(
        prompt,
        model="smollm2",
        base_url=llama_server.base_url,
        system="You are a helpful assistant.",
        segment="line",
        target="Lyon",
        runs_dir=runs_dir,
        max_tokens=24,
        timeout=TIMEOUT_S,
    )
    rec = run.record
    assert run.status == "finished", rec.reason
    assert rec.scorer == "logprob" and rec.target.text == "Lyon"
    assert all(e.output is None for e in rec.evaluations if e.purpose == "attribution")
    assert run.top(1)[0].index == 0 and run.spans[0].significant
    assert [s.index for s in run.spans if s.significant] == [0]
