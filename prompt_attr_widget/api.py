"""The public Python API: attribute, attribute_async, score_deletions, load_run, list_runs.

One driver feeds the engine's events to the run store and to any extra
sinks (a progress printer, a widget). Interrupts and cancellation close the
run as `aborted` with every result already received on disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from .backends import Backend, resolve_backend
from .cache import CallCache
from .config import AttributionConfig, cache_dir
from .config import runs_dir as resolve_runs_dir
from .engine import run_events
from .engine import score_deletions as _score_deletions
from .errors import UsageError
from .events import TERMINAL
from .result import Attribution
from .runs import RunSummary, RunWriter, new_run_id, read_run
from .runs import list_runs as _list_runs

EventSink = Callable[[object], None]


async def attribute_async(
    prompt: str,
    *,
    model: str = "local",
    base_url: str | None = None,
    api_key: str | None = None,
    backend: Backend | None = None,
    runs_dir: str | Path | None = None,
    on_event: EventSink | Sequence[EventSink] | None = None,
    **options,
) -> Attribution:
    """Attribute the model's answer to the spans of `prompt`; the run is saved.

    Options are those of `AttributionConfig` (segment, method, budget,
    concurrency, rpm, max_tokens, system, cache, ...). Pass `backend=` to
    use an already-built backend (tests, benchmarks, custom models).
    """
    if not isinstance(prompt, str):
        raise UsageError(f"the prompt must be text (str), not {type(prompt).__name__}")
    config = AttributionConfig.build(model=model, base_url=base_url, **options)
    own_backend = backend is None
    backend = backend or resolve_backend(config, api_key=api_key)
    sinks = [on_event] if callable(on_event) else list(on_event or [])
    folder = resolve_runs_dir(runs_dir)
    store = RunWriter(folder)
    cache = CallCache(cache_dir() if config.cache else None)
    try:
        async for event in run_events(prompt, config, backend, cache=cache, run_id=new_run_id()):
            if isinstance(event, TERMINAL) and store.record is not None:
                # Backends learn part of their fingerprint from answers (OpenAI's
                # system_fingerprint): record it before run.json is written.
                store.record.backend.fingerprint.update(backend.info.fingerprint)
            store.handle(event)
            for sink in sinks:
                sink(event)
    except (asyncio.CancelledError, KeyboardInterrupt):
        _tell(sinks, store.end("aborted", "interrupted (Ctrl-C or Stop); every result received so far is saved"))
        raise
    except BaseException as exc:
        _tell(sinks, store.end("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        cache.close()
        if own_backend:
            await backend.aclose()
    if store.record is not None:
        store.record.backend.fingerprint.update(backend.info.fingerprint)
    return Attribution(store.record, folder)


async def score_deletions_async(
    prompt: str,
    deletions: Sequence[Sequence[int]],
    *,
    model: str = "local",
    base_url: str | None = None,
    api_key: str | None = None,
    backend: Backend | None = None,
    **options,
) -> list[float]:
    """Score deleting each given set of spans together, against the baseline (no run saved).

    Spans are those `segment(prompt, ...)` gives for the same options; the
    scorer and target options work as in `attribute`.
    """
    config = AttributionConfig.build(model=model, base_url=base_url, **options)
    own_backend = backend is None
    backend = backend or resolve_backend(config, api_key=api_key)
    cache = CallCache(cache_dir() if config.cache else None)
    try:
        scores, _ = await _score_deletions(prompt, [list(d) for d in deletions], config, backend, cache=cache)
        return scores
    finally:
        cache.close()
        if own_backend:
            await backend.aclose()


def score_deletions(prompt: str, deletions: Sequence[Sequence[int]], **kwargs) -> list[float]:
    """Synchronous `score_deletions_async`."""
    return _run_sync(score_deletions_async(prompt, deletions, **kwargs))


def _tell(sinks: list[EventSink], events: list) -> None:
    """Pass closing events to the sinks; a failing sink must not hide the real error."""
    for event in events:
        for sink in sinks:
            with contextlib.suppress(Exception):  # the run is already ending with another error
                sink(event)


def attribute(prompt: str, **kwargs) -> Attribution:
    """Synchronous `attribute_async`; also works where an event loop already runs (Jupyter)."""
    return _run_sync(attribute_async(prompt, **kwargs))


def _run_sync(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    return _run_in_thread(coro)


def _run_in_thread(coro):
    """Run a coroutine on a private loop in a worker thread; Ctrl-C cancels it cleanly."""
    loop = asyncio.new_event_loop()
    task_box: dict = {}

    def runner():
        asyncio.set_event_loop(loop)
        task_box["task"] = loop.create_task(coro)
        try:
            return loop.run_until_complete(task_box["task"])
        finally:
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prompt-attr") as pool:
        future = pool.submit(runner)
        try:
            return future.result()
        except KeyboardInterrupt:
            if "task" in task_box:
                loop.call_soon_threadsafe(task_box["task"].cancel)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                future.result()
            raise


def load_run(run_id: str, runs_dir: str | Path | None = None) -> Attribution:
    """A saved run as an Attribution, with zero model calls ('latest' or a prefix works)."""
    folder = resolve_runs_dir(runs_dir)
    return Attribution(read_run(run_id, folder), folder)


def list_runs(runs_dir: str | Path | None = None) -> list[RunSummary]:
    return _list_runs(resolve_runs_dir(runs_dir))
