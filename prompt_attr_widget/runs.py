"""Runs on disk: `runs/<run_id>/run.json` and `runs/<run_id>/events.jsonl`.

`events.jsonl` is appended and flushed event by event while a run is live,
so a crash or an interrupt loses nothing already paid for. `run.json` is
written atomically (temp file, fsync, rename) at the start and at the end;
a run whose `run.json` still says "running" is rebuilt from its events.
Run ids are checked against one strict pattern before any path is built,
so no id can reach outside the runs folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from .errors import PromptAttrError, RunNotFound, UsageError
from .estimate import estimate
from .events import (
    EVENT_ADAPTER,
    BaselineDone,
    Estimate,
    Evaluated,
    FaithfulnessMeasured,
    NoiseMeasured,
    Progress,
    RunAborted,
    RunFailed,
    RunFinished,
    RunStarted,
)
from .plan import random_masks
from .schema import RunRecord, Spend

RUN_ID = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{8}\Z")
_ID_PREFIX = re.compile(r"^[0-9TZa-f-]{4,30}\Z")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable (UTC time to the millisecond) and unique (32 random bits)."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def _disk_error(action: str, path: Path, exc: OSError) -> PromptAttrError:
    return PromptAttrError(
        f"cannot {action} {path}: {exc.strerror or exc}; free some space, fix the folder's "
        "permissions, or choose another folder with --runs-dir / PROMPT_ATTR_RUNS_DIR"
    )


def atomic_write_json(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_event(record: RunRecord | None, event) -> RunRecord | None:
    """Fold one event into the run record (used live and to rebuild from events.jsonl)."""
    if isinstance(event, RunStarted):
        return event.record.model_copy(deep=True)
    if record is None:
        return None
    if isinstance(event, BaselineDone):
        record.baseline, record.target = event.baseline, event.target
    elif isinstance(event, NoiseMeasured):
        record.noise = event.noise
    elif isinstance(event, Evaluated):
        record.evaluations.append(event.evaluation)
    elif isinstance(event, Estimate):
        record.attribution, record.surrogate = event.attribution, event.surrogate
    elif isinstance(event, FaithfulnessMeasured):
        record.faithfulness = event.faithfulness
    elif isinstance(event, (RunFinished, RunAborted, RunFailed)):
        record.status = {RunFinished: "finished", RunAborted: "aborted", RunFailed: "failed"}[type(event)]
        record.reason = getattr(event, "reason", None) or getattr(event, "error", None)
        record.spend = event.spend
        record.timings_ms = event.timings_ms
        record.finished_at = _now()
    return record


def estimate_record(record: RunRecord) -> Estimate:
    """The estimate of a stored run's attribution evaluations (for runs stopped mid-pass)."""
    c = record.config
    method, n = c.get("method", "hierarchical"), len(record.spans)
    masks = random_masks(n, c["masks"], c["keep_prob"], c["seed"]) if method == "surrogate" else None
    scores, fit = estimate(
        method, n, record.evaluations, record.noise, masks=masks,
        keep_prob=c.get("keep_prob", 0.5), seed=c.get("seed", 42),
    )
    rounds = [e.round for e in record.evaluations if e.purpose == "attribution"]
    return Estimate(round=max(rounds, default=0), attribution=scores, surrogate=fit)


def tally_spend(record: RunRecord) -> Spend:
    """Spend recounted from the stored calls (for runs that ended without a tally)."""
    calls = [c for c in [record.baseline, *record.evaluations] if c is not None]
    costs = [c.cost_usd for c in calls]
    return Spend(
        usd=None if any(c is None for c in costs) else round(sum(costs), 10),
        calls=sum(not c.cache_hit for c in calls),
        cache_hits=sum(c.cache_hit for c in calls),
        prompt_tokens=sum(c.prompt_tokens for c in calls),
        completion_tokens=sum(c.completion_tokens for c in calls),
        embed_tokens=sum(c.embed_tokens for c in calls),
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunWriter:
    """The run-store sink: persists every event as it arrives."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self.record: RunRecord | None = None
        self._events = None

    @property
    def path(self) -> Path:
        return self.runs_dir / self.record.run_id

    def handle(self, event) -> None:
        if isinstance(event, Progress):
            return  # derivable from the other events; not worth the disk
        self.record = apply_event(self.record, event)
        if isinstance(event, RunStarted):
            self._open()
        self._append(event)
        if self.record.status != "running":
            self._close()

    def end(self, status: str, reason: str) -> list:
        """Close a run that ended outside the event stream (interrupt, crash in a sink).

        The attribution of what was already evaluated is computed first, so a
        stopped run replays with its scores, not as a blank heat-map. Returns
        the closing events, so the caller can pass them on to other sinks.
        """
        if self.record is None or self.record.status != "running" or self._events is None:
            return []  # never started, already closed, or its folder could not be made
        events = []
        if any(e.purpose == "attribution" for e in self.record.evaluations):
            events.append(estimate_record(self.record))
        spend = tally_spend(self.record)
        events.append(RunAborted(reason=reason, spend=spend) if status == "aborted" else RunFailed(error=reason, spend=spend))
        for event in events:
            self.handle(event)
        return events

    def _open(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
            self._events = open(self.path / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - open for the run's life
            self._write_record()
        except OSError as exc:
            raise _disk_error("write the run to", self.runs_dir, exc) from None

    def _append(self, event) -> None:
        try:
            self._events.write(event.model_dump_json() + "\n")
            self._events.flush()
        except OSError as exc:
            raise _disk_error("append to", self.path / "events.jsonl", exc) from None

    def _write_record(self) -> None:
        atomic_write_json(self.path / "run.json", self.record.model_dump_json(indent=1))

    def _close(self) -> None:
        try:
            os.fsync(self._events.fileno())
            self._events.close()
            self._write_record()
        except OSError as exc:
            raise _disk_error("finish the run in", self.path, exc) from None


def resolve_run_dir(run_id: str, runs_dir: Path) -> Path:
    """The folder of a run, given its full id, a unique prefix or 'latest'."""
    runs_dir = Path(runs_dir)
    if not isinstance(run_id, str) or not (run_id == "latest" or _ID_PREFIX.match(run_id)):
        raise UsageError(f"{run_id!r} is not a run id (like 20261123T101500123Z-1a2b3c4d); see prompt-attr ls")
    if RUN_ID.match(run_id):
        path = runs_dir / run_id
        if not (path / "run.json").is_file() and not (path / "events.jsonl").is_file():
            raise RunNotFound(f"no run {run_id} in {runs_dir}; see prompt-attr ls")
        return path
    ids = run_ids(runs_dir)
    matches = ids[-1:] if run_id == "latest" else [i for i in ids if i.startswith(run_id)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise RunNotFound(f"{what} in {runs_dir} match {run_id!r}; see prompt-attr ls")
    return runs_dir / matches[0]


def run_ids(runs_dir: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(runs_dir) if e.is_dir() and RUN_ID.match(e.name))
    except FileNotFoundError:
        return []


def read_run(run_id: str, runs_dir: Path) -> RunRecord:
    """Load a run record; a run left 'running' (crash, kill) is rebuilt from its events."""
    path = resolve_run_dir(run_id, runs_dir)
    record = None
    try:
        record = RunRecord.model_validate_json((path / "run.json").read_bytes())
    except FileNotFoundError:
        pass
    except (ValidationError, ValueError) as exc:
        raise PromptAttrError(f"run {path.name} is corrupted (run.json does not validate: {str(exc).splitlines()[0]})") from None
    if record is None or record.status == "running":
        record = replay_events(path) or record
    if record is None:
        raise PromptAttrError(f"run {path.name} has neither a readable run.json nor events")
    return record


def replay_events(path: Path) -> RunRecord | None:
    """Rebuild a record from events.jsonl, skipping a torn last line."""
    record = None
    try:
        lines = (path / "events.jsonl").read_text("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        try:
            event = EVENT_ADAPTER.validate_json(line)
        except (ValidationError, ValueError):
            continue
        record = apply_event(record, event)
    if record is not None and record.status == "running":
        record.status = "aborted"
        record.reason = "the run stopped before it finished (rebuilt from events.jsonl)"
    return record


@dataclass
class RunSummary:
    run_id: str
    created_at: str
    status: str
    model: str
    spans: int
    evaluations: int
    spend_usd: float | None
    top_span: str


def list_runs(runs_dir: Path) -> list[RunSummary]:
    out = []
    for run_id in run_ids(runs_dir):
        try:
            r = read_run(run_id, runs_dir)
        except PromptAttrError as exc:
            out.append(RunSummary(run_id, "?", "corrupt", "?", 0, 0, None, str(exc)[:60]))
            continue
        top = max(r.attribution, key=lambda s: s.score, default=None)
        top_text = r.spans[top.index].text if top else ""
        out.append(
            RunSummary(
                run_id=r.run_id,
                created_at=r.created_at,
                status=r.status,
                model=r.backend.model,
                spans=len(r.spans),
                evaluations=len(r.evaluations),
                spend_usd=r.spend.usd,
                top_span=" ".join(top_text.split())[:60],
            )
        )
    return out


def dump_json(record: RunRecord) -> str:
    return json.dumps(record.model_dump(mode="json"), indent=1, ensure_ascii=False)
