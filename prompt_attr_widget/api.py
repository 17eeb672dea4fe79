"""The public Python API: attribute, attribute_async, score_deletions, load_run, list_runs.

One driver feeds the engine's events to the run store and to any extra
sinks (a progress printer, a widget). Interrupts and cancellation close the
run as `aborted` with every result already received on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from .backends import Backend, resolve_backend
from .core.config import AttributionConfig, cache_dir
from .core.config import runs_dir as resolve_runs_dir
from .core.errors import UsageError
from .core.events import TERMINAL
from .core.options import RESUMABLE
from .core.schema import RunRecord
from .engine.cache import CallCache
from .engine.redact import redactor_for
from .engine.run import RunStream
from .engine.run import score_deletions as _score_deletions
from .engine.runner import run_in_thread, run_to_end
from .store.runs import RunSummary, RunWriter, read_run
from .store.runs import list_runs as _list_runs
from .views.compare import Comparison, compare_records
from .views.result import Attribution

EventSink = Callable[[object], None]


async def attribute_async(
    prompt: str | None = None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    backend: Backend | None = None,
    runs_dir: str | Path | None = None,
    on_event: EventSink | Sequence[EventSink] | None = None,
    resume: str | None = None,
    rerun: str | None = None,
    tags: Sequence[str] = (),
    **options,
) -> Attribution:
    """Attribute the model's answer to the spans of `prompt`; the run is saved.

    Options are those of `AttributionConfig` (segment, method, budget,
    concurrency, rpm, max_tokens, system, cache, ...). Pass `backend=` to
    use an already-built backend (tests, benchmarks, custom models).
    `resume=RUN_ID` finishes a stopped run (aborted or failed) in its own
    folder; `rerun=RUN_ID` repeats a run from its stored snapshot as a new
    run (call cache off unless `cache=True`, so the model is really asked
    again) and sets `result.reproduction`: did the answers match? Either way
    only the options in RESUMABLE_OPTIONS may change. `tags` (baseline,
    experimental) tag the run once it is saved; `label=` names it.
    """
    folder = resolve_runs_dir(runs_dir)
    store = RunWriter(folder)
    original = None
    if set(tags) - {"baseline", "experimental"}:
        raise UsageError(f"tags {sorted(tags)}: a new run can be tagged baseline or experimental")
    if resume is not None and rerun is not None:
        raise UsageError("give resume= or rerun=, not both")
    if resume is not None:
        stored = read_run(resume, folder)
        if stored.status in ("running", "finished"):
            what = "is still running" if stored.status == "running" else "already finished"
            raise UsageError(f"run {stored.run_id} {what}; only aborted or failed runs can be resumed")
        config = kept_config(stored, prompt, model=model, base_url=base_url, **options)
        prompt = stored.prompt
    elif rerun is not None:
        original, stored = read_run(rerun, folder), None
        config = kept_config(original, prompt, model=model, base_url=base_url, **{"cache": False, **options})
        prompt = original.prompt
    else:
        if not isinstance(prompt, str):
            raise UsageError(f"the prompt must be text (str), not {type(prompt).__name__}")
        stored, config = None, AttributionConfig.build(model=model, base_url=base_url, **options)
    own_backend = backend is None
    backend = backend or resolve_backend(config, api_key=api_key)
    sinks = [on_event] if callable(on_event) else list(on_event or [])
    store.redactor = redactor_for(config)
    cache = open_cache(config)
    stream = None
    try:
        if stored is None:
            run_id = store.reserve()  # before any call: a runs folder we cannot write fails here
        else:
            store.resume(stored)
            run_id = stored.run_id
        stream = RunStream(prompt, config, backend, cache=cache, run_id=run_id, stored=stored,
                           rerun_of=original.run_id if original else None, journal=store.journal)
        async for event in stream.events():
            if isinstance(event, TERMINAL) and store.record is not None:
                # Backends learn part of their fingerprint from answers (OpenAI's
                # system_fingerprint): record it before run.json is written.
                store.record.backend.fingerprint.update(backend.info.fingerprint)
            event = store.handle(event)  # as stored: with redact=True, the sinks see no secret either
            for sink in sinks:
                sink(event)
    except (asyncio.CancelledError, KeyboardInterrupt) as exc:
        by = "SIGTERM" if exc.args == ("SIGTERM",) else "Ctrl-C or Stop"  # see engine/runner.py
        reason = f"interrupted ({by}); every result received so far is saved"
        _tell(sinks, await _stop(stream, store, "aborted", reason))
        raise
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        _tell(sinks, await _stop(stream, store, "failed", reason))
        raise
    finally:
        store.release()
        cache.close()
        if own_backend:
            await backend.aclose()
    if store.record is not None:
        store.record.backend.fingerprint.update(backend.info.fingerprint)
    result = Attribution(store.record, folder)
    if tags:
        from .store.lifecycle import set_tags

        set_tags(result.run_id, folder, add=tuple(tags))
    if original is not None:
        from .views.compare import reproduction

        result.reproduction = reproduction(original, store.record)
    return result


# What a resumed run may change: how it is run, never what it computes (the options table says which).
RESUMABLE_OPTIONS = RESUMABLE


def kept_config(stored, prompt: str | None, *, model: str | None, base_url: str | None, **options) -> AttributionConfig:
    """A stored run's config for resuming or re-running it: only options that do not
    change what it computes may be overridden."""
    from .core.identity import public_url

    if not stored.reproducible:  # its stored prompt is not the one the model saw (redact=True)
        raise UsageError(f"run {stored.run_id} cannot be resumed or re-run: {stored.not_reproducible_because}; start a new run")
    if prompt is not None and prompt != stored.prompt:
        raise UsageError(f"the prompt differs from the one run {stored.run_id} attributed; start a new run")
    problems: dict[str, str] = {}  # what `stored.settings` would read as a default: refused here
    before = AttributionConfig.from_stored(stored.config, problems)
    if problems:
        raise UsageError(f"invalid option: {'; '.join(problems.values())}")
    if base_url is not None and public_url(base_url) == before.base_url:
        before = before.model_copy(update={"base_url": base_url})  # the same server; its URL may hold credentials, never stored
    given = {k: v for k, v in {**options, "model": model, "base_url": base_url}.items() if v is not None}
    asked = AttributionConfig.build(**{**before.model_dump(), **given})
    changed = [k for k in AttributionConfig.model_fields
               if k not in RESUMABLE_OPTIONS and getattr(asked, k) != getattr(before, k)]
    if changed:
        raise UsageError(
            f"a resumed or re-run run keeps the options it started with; {', '.join(changed)} cannot change "
            f"(only {', '.join(RESUMABLE_OPTIONS)} can): start a new run instead"
        )
    return asked


async def _stop(stream: RunStream | None, store: RunWriter, status: str, reason: str) -> list:
    """End a run stopped outside its stream (an interrupt, a crash in a sink).

    The engine's stream is closed, so the run cancels its calls and hands
    over the answers already back; the store saves those, then the run's
    own closing events (its estimate and its spend). Returns the events
    stored, for the other sinks.
    """
    if stream is None:
        return []  # stopped before the run was asked for: nothing to close
    # Answers already back are collected into `stream.unreported`. Interrupted again, the calls
    # still in flight are not waited for: their reservations, on disk, count them.
    with contextlib.suppress(asyncio.CancelledError):
        await stream.aclose()
    return store.end(stream.unreported, lambda: stream.closing_events(status, reason))


async def ab_async(prompt_a: str, prompt_b: str, **options):
    """Attribute two variants of a prompt under identical settings and compare them.

    Both runs are saved (labelled `<label>/A` and `<label>/B` when a label is
    given); they run one after the other so that A's answers, cached, are
    not asked twice where the variants share text.
    """
    from .views.compare import ABResult

    label = options.pop("label", None)
    a = await attribute_async(prompt_a, label=f"{label}/A" if label else None, **options)
    b = await attribute_async(prompt_b, label=f"{label}/B" if label else None, **options)
    return ABResult(a, b, compare_records(a.record, b.record))


def ab(prompt_a: str, prompt_b: str, **options):
    """Synchronous `ab_async`."""
    return _run_sync(ab_async(prompt_a, prompt_b, **options))


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
    cache = open_cache(config)
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


def open_cache(config: AttributionConfig) -> CallCache:
    """The call cache a config asks for; read-only with redact=True, whose answers may echo a secret."""
    return CallCache(cache_dir() if config.cache else None, read_only=config.redact)


def _tell(sinks: list[EventSink], events: list) -> None:
    """Pass closing events to the sinks; a failing sink must not hide the real error."""
    for event in events:
        for sink in sinks:
            with contextlib.suppress(Exception):  # the run is already ending with another error
                sink(event)


def attribute(prompt: str | None = None, **kwargs) -> Attribution:
    """Synchronous `attribute_async`; also works where an event loop already runs (Jupyter)."""
    return _run_sync(attribute_async(prompt, **kwargs))


def _run_sync(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_to_end(coro)
    return run_in_thread(coro)


def load_run(run_id: str, runs_dir: str | Path | None = None) -> Attribution:
    """A saved run as an Attribution, with zero model calls ('latest' or a prefix works)."""
    folder = resolve_runs_dir(runs_dir)
    return Attribution(read_run(run_id, folder), folder)


def list_runs(runs_dir: str | Path | None = None, **where) -> list[RunSummary]:
    """Saved runs, oldest first; filter with prompt (hash prefix), label, tag, model, status."""
    return _list_runs(resolve_runs_dir(runs_dir), **where)


def compare(run_a, run_b, runs_dir: str | Path | None = None) -> Comparison:
    """Compare two runs (ids, prefixes, 'latest', or records); no model calls."""
    folder = resolve_runs_dir(runs_dir)
    a = run_a if isinstance(run_a, RunRecord) else read_run(run_a, folder)
    b = run_b if isinstance(run_b, RunRecord) else read_run(run_b, folder)
    return compare_records(a, b)
