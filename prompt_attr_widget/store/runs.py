"""Runs on disk: `runs/<run_id>/run.json` and `runs/<run_id>/events.jsonl`.

`events.jsonl` is appended and flushed event by event while a run is live,
so a crash or an interrupt loses nothing already paid for. `run.json` is
written atomically (temp file, fsync, rename) at the start and at the end;
a run whose `run.json` still says "running" is rebuilt from its events.
Run ids are checked against one strict pattern before any path is built,
so no id can reach outside the runs folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from ..core.errors import PromptAttrError, RunBusy, RunNotFound, UsageError
from ..core.events import (
    EVENT_ADAPTER,
    Progress,
    RunResumed,
    RunStarted,
)
from ..core.reducer import apply_event
from ..core.schema import RunRecord, inconsistency
from .tokens import TokenFile, attach

try:  # POSIX advisory locks: one writer per run folder
    import fcntl
except ImportError:  # Windows: no lock; two writers of one run are then the user's to avoid
    fcntl = None

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


def busy(run_id: str, doing: str) -> RunBusy:
    return RunBusy(
        f"run {run_id} is being written by another process right now (its events.jsonl is locked); "
        f"wait for it to end (or stop it: Ctrl-C where it runs), then {doing} it"
    )


@contextlib.contextmanager
def writer_lock(folder: Path, doing: str):
    """Keep any writer out of a run's folder for the block (delete, archive), or raise RunBusy.

    A writer holds an exclusive flock on events.jsonl for the life of the
    run; this takes a shared one, which fails while a writer holds it and,
    while held, makes a writer that tries to start (resume) fail instead.
    Two readers never block each other. No events.jsonl (or no fcntl): no
    writer can hold the folder.
    """
    fd = None
    if fcntl is not None:
        try:  # non-blocking: a FIFO in place of the file must not hang us
            fd = os.open(folder / "events.jsonl", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise busy(folder.name, doing) from None
            except OSError:
                pass  # a file system without locks: no writer could hold one either
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def is_live(folder: Path) -> bool:
    """Whether another process is writing this run right now (it holds the run's lock)."""
    try:
        with writer_lock(folder, "read"):
            return False
    except RunBusy:
        return True


class RunWriter:
    """The run-store sink: persists every event as it arrives.

    The run's folder is reserved before the first model call (`reserve`), so
    an unwritable or full runs folder is reported before anything is paid
    for, and two processes can never pick the same id. While the writer
    lives it holds an exclusive lock on the folder, so a run cannot be
    resumed while another process still writes it.
    """

    def __init__(self, runs_dir: Path, redactor: Callable | None = None):
        self.runs_dir = Path(runs_dir)
        self.redactor = redactor  # masks secrets in each event before it is stored (redact=True)
        self.record: RunRecord | None = None
        self.run_id: str | None = None
        self._events = None
        self._tokens: TokenFile | None = None  # logprobs.f32: the per-token numbers of the events
        self._started = False  # the run's first event is on disk (a resumed run's always is)
        self._early: list = []  # spend of calls made before RunStarted (the log-prob probe)

    @property
    def path(self) -> Path:
        return self.runs_dir / self.run_id

    def reserve(self) -> str:
        """Create a new run's folder under a fresh id (retrying on the rare clash) and lock it."""
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            while True:
                run_id = new_run_id()
                with contextlib.suppress(FileExistsError):
                    (self.runs_dir / run_id).mkdir()
                    break
        except OSError as exc:
            raise _disk_error("write the run to", self.runs_dir, exc) from None
        self.run_id = run_id
        self._open_events()
        return run_id

    def resume(self, record: RunRecord) -> None:
        """Continue a stored run in its own folder (locked: one writer at a time)."""
        self.run_id, self.record = record.run_id, record.model_copy(deep=True)
        self._started = True
        run_json = self.path / "run.json"
        if run_json.exists() and not run_json.is_file():  # the record was rebuilt from events.jsonl
            kind = "a directory" if run_json.is_dir() else "not a regular file"
            raise PromptAttrError(
                f"run {self.run_id} cannot be resumed: its run.json is {kind}, not a file, so the run could not "
                f"be saved; remove or rename it ({run_json}) and resume again: the run is rebuilt from events.jsonl"
            )
        self._open_events()

    def release(self) -> None:
        """Unlock. A folder that holds no usable run (refused before it began, or its first
        event never reached the disk) is removed, so no half-made run is left behind."""
        if self._tokens is not None:
            with contextlib.suppress(OSError):
                self._tokens.close()
        if self._events is not None and not self._events.closed:
            with contextlib.suppress(OSError):
                self._events.close()  # closing the file releases its lock
        if self.run_id is None or self._started:
            return
        for name in ("events.jsonl", "run.json", "summary.json", "logprobs.f32"):
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def handle(self, event):
        """Store one event; returns it as stored (redacted), which is what other sinks should see."""
        if isinstance(event, Progress):
            return event  # derivable from the other events; not worth the disk
        if self.redactor is not None:
            event = self.redactor(event)
        if self._tokens is not None:
            try:
                event = self._tokens.place(event)  # its numbers on disk before the event names them
            except OSError as exc:
                raise _disk_error("append to", self._tokens.path, exc) from None
        self.record = apply_event(self.record, event)
        if isinstance(event, RunStarted):
            self.run_id = self.record.run_id
            self._open()
        self._append(event)
        self._started = True
        early, self._early = self._early, []
        for spent in early:
            self.handle(spent)
        if isinstance(event, RunResumed):
            try:
                self._write_record()  # readers see it running again
            except OSError as exc:
                raise _disk_error("write the run to", self.path, exc) from None
        if self.record.status != "running":
            self._close()
        return event

    def journal(self, event) -> None:
        """Store a billed call's CallReserved or CallSettled now: the engine waits for it.

        A call made before the run's first event (the probe of whether a
        server offers log-probabilities) is stored just after it. One that
        settles after the run was closed (a call cut off, stopping late) is
        dropped: the run's ending already counted it at its worst case.
        """
        if self.record is None:
            self._early.append(event)
        elif self.record.status == "running" and self._events is not None and not self._events.closed:
            self.handle(event)

    def end(self, received: list | tuple, closing: Callable[[], list]) -> list:
        """Close a run that ended outside the event stream (interrupt, crash in a sink).

        `received` are evaluations that came back but were not streamed yet:
        paid for, so they are stored first. `closing()` gives the events that
        end it, from the live run (its estimate of what was evaluated and its
        spend): the store computes none of them, and asks only for a run it
        still has open. Returns the events written, so the caller can pass
        them on to other sinks.
        """
        if self.record is None or self.record.status != "running" or self._events is None or self._events.closed:
            return []  # never started, already closed, or its folder could not be made
        events = [self.handle(event) for event in received]
        return events + [self.handle(event) for event in closing()]

    def _open(self) -> None:
        try:
            if self._events is None:  # not reserved: events fed in directly
                self.path.mkdir(parents=True, exist_ok=True)
                self._open_events()
            self._write_record()
        except OSError as exc:
            raise _disk_error("write the run to", self.runs_dir, exc) from None

    def _open_events(self) -> None:
        """Open events.jsonl for appending and lock it for as long as the run is written."""
        try:
            self._events = open(self.path / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - open for the run's life
        except OSError as exc:
            raise _disk_error("append to", self.path / "events.jsonl", exc) from None
        self._tokens = TokenFile(self.path)
        if fcntl is None:
            return
        try:
            fcntl.flock(self._events.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._events.close()
            raise busy(self.run_id, "resume") from None

    def _append(self, event) -> None:
        try:
            if os.fstat(self._events.fileno()).st_nlink == 0:
                raise PromptAttrError(
                    f"run {self.run_id}'s folder was deleted while the run was being written; it stopped "
                    "so as not to pay for answers it can no longer store"
                )
            self._events.write(event.model_dump_json() + "\n")
            self._events.flush()
        except OSError as exc:
            raise _disk_error("append to", self.path / "events.jsonl", exc) from None

    def _write_record(self) -> None:
        data = self.record.model_dump_json(indent=1)
        atomic_write_json(self.path / "run.json", data)
        summary = {**asdict(summarise(self.record)), "run_json_bytes": len(data.encode("utf-8"))}
        atomic_write_json(self.path / "summary.json", json.dumps(summary, ensure_ascii=False))

    def _close(self) -> None:
        try:
            self._tokens.sync()
            self._tokens.close()
            os.fsync(self._events.fileno())
            self._write_record()
            self._events.close()  # and with it the lock
        except OSError as exc:
            raise _disk_error("finish the run in", self.path, exc) from None


def resolve_run_dir(run_id: str, runs_dir: Path) -> Path:
    """The folder of a run, given its full id, a unique prefix or 'latest'."""
    runs_dir = Path(runs_dir)
    if not isinstance(run_id, str) or not (run_id == "latest" or _ID_PREFIX.match(run_id)):
        raise UsageError(f"{run_id!r} is not a run id (like 20261123T101500123Z-1a2b3c4d); see prompt-attr ls")
    if RUN_ID.match(run_id):
        path = runs_dir / run_id
        if runs_dir.exists() and not runs_dir.is_dir():
            raise _not_a_folder(runs_dir)
        if not path.is_dir():
            raise RunNotFound(f"no run {run_id} in {runs_dir}; see prompt-attr ls")
        return path
    ids = run_ids(runs_dir)
    matches = ids[-1:] if run_id == "latest" else [i for i in ids if i.startswith(run_id)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise RunNotFound(f"{what} in {runs_dir} match {run_id!r}; see prompt-attr ls")
    return runs_dir / matches[0]


def _not_a_folder(runs_dir: Path) -> UsageError:
    return UsageError(f"{runs_dir} is a file, not a runs folder; give a folder with --runs-dir or PROMPT_ATTR_RUNS_DIR")


def run_ids(runs_dir: Path) -> list[str]:
    """The ids of the run folders in a runs folder, sorted (oldest first); none if it does not exist."""
    try:
        with os.scandir(runs_dir) as entries:
            return sorted(e.name for e in entries if RUN_ID.match(e.name) and e.is_dir())
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise _not_a_folder(Path(runs_dir)) from None
    except OSError as exc:
        raise PromptAttrError(
            f"cannot read the runs folder {runs_dir}: {exc.strerror or exc}; fix its permissions or choose "
            "another folder with --runs-dir / PROMPT_ATTR_RUNS_DIR"
        ) from None


def _read_file(folder: Path, name: str) -> tuple[bytes | None, str]:
    """A run file's bytes, or None and why not (missing, a directory, unreadable)."""
    path = folder / name
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a directory, a FIFO, /dev/zero: never read
            kind = "a directory" if path.is_dir() else "not a regular file"
            return None, f"{name} is {kind}, not a file"
        return path.read_bytes(), ""
    except FileNotFoundError:
        return None, f"{name} is missing"
    except OSError as exc:
        return None, f"{name} cannot be read ({exc.strerror or exc})"


def is_empty(folder: Path) -> bool:
    """A folder reserved for a run that never wrote its first event: nothing in it but an empty
    events.jsonl (or nothing at all) and leftover temp files. Nothing is lost by removing it."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".tmp-"):
                    continue
                if entry.name != "events.jsonl" or not entry.is_file(follow_symlinks=False) or entry.stat().st_size:
                    return False
    except OSError:
        return False
    return True


def empty_message(run_id: str) -> str:
    return (
        f"run {run_id} is empty: its folder holds no event (the run never started: the disk was full or the "
        f"process was killed before its first write); prompt-attr delete {run_id} (or prune) removes it"
    )


def read_run(run_id: str, runs_dir: Path) -> RunRecord:
    """Load a run record. A run.json that is missing, does not validate (truncated, edited, a
    NaN) or still says 'running' (crash, kill) is rebuilt from events.jsonl."""
    path = resolve_run_dir(run_id, runs_dir)
    record = None
    data, problem = _read_file(path, "run.json")
    if data is not None:
        try:
            record = RunRecord.model_validate_json(data)
        except (ValidationError, ValueError) as exc:
            problem = f"run.json does not validate: {str(exc).splitlines()[0]}"
    if record is None or record.status == "running":
        live = is_live(path)
        rebuilt, events_problem = _replay(path, live)
        record = rebuilt or record
        if record is None:
            if is_empty(path):
                if live:
                    raise RunNotFound(f"run {path.name} has only just started and holds nothing yet; try again in a moment")
                raise RunNotFound(empty_message(path.name))
            raise PromptAttrError(
                f"run {path.name} is corrupted ({problem}, and {events_problem}: nothing to rebuild it from); "
                f"prompt-attr delete {path.name} removes it"
            )
        if record.status == "running" and not live:  # run.json said running; its events are unreadable
            _stopped(record)
    problem = inconsistency(record)
    if problem:
        raise PromptAttrError(f"run {path.name} is corrupted ({problem})")
    attach(record, path)
    return record


def _stopped(record: RunRecord) -> None:
    record.status = "aborted"
    record.reason = "the run stopped before it finished (rebuilt from events.jsonl)"


def _replay(path: Path, live: bool) -> tuple[RunRecord | None, str]:
    """The record events.jsonl rebuilds, or None and why it rebuilds none."""
    data, problem = _read_file(path, "events.jsonl")
    if data is None:
        return None, problem
    record = None
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            event = EVENT_ADAPTER.validate_json(line)
        except (ValidationError, ValueError):
            continue
        record = apply_event(record, event)
    if record is None:
        return None, "events.jsonl holds no readable run_started event"
    if record.status == "running" and not live:
        _stopped(record)
    return record, ""


def replay_events(path: Path, live: bool = False) -> RunRecord | None:
    """Rebuild a record from events.jsonl, skipping a torn last line.

    A run that never reached its end is `aborted`, unless it is `live`
    (another process is writing it right now): then it is still running.
    """
    record = _replay(Path(path), live)[0]
    if record is not None:
        attach(record, Path(path))
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
    prompt_sha256: str = ""  # runs of the same prompt and settings share it
    label: str | None = None
    tags: list[str] = field(default_factory=list)  # from tags.json: they change after the run


def summarise(record: RunRecord) -> RunSummary:
    top = next(iter(record.ranked()), None)
    top_text = record.spans[top.index].text if top else ""
    return RunSummary(
        run_id=record.run_id,
        created_at=record.created_at,
        status=record.status,
        model=record.backend.model,
        spans=len(record.spans),
        evaluations=len(record.evaluations),
        spend_usd=record.spend.counted_usd,
        top_span=" ".join(top_text.split())[:60],
        prompt_sha256=record.prompt_sha256,
        label=record.settings.label,
    )


def _stored_summary(path: Path) -> RunSummary | None:
    """The run's summary.json, if it is there and still describes its run.json.

    A run still marked running is left to `read_run` (it may have died and
    need rebuilding), and so is a run.json whose size changed since its
    summary was written (truncated, edited or corrupted).
    """
    try:
        data = json.loads((path / "summary.json").read_bytes())
        size = data.pop("run_json_bytes")
        summary = RunSummary(**data)
        fresh = (path / "run.json").stat().st_size == size
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return summary if fresh and summary.run_id == path.name and _well_typed(summary) else None


def _well_typed(s: RunSummary) -> bool:
    """A summary.json is anyone's to edit: each field must have its type (and a spend its
    meaning: a finite amount, never NaN) before `ls` formats it; else run.json is read."""
    def count(n) -> bool:
        return type(n) is int and n >= 0

    def amount(x) -> bool:
        try:
            return type(x) in (int, float) and math.isfinite(float(x)) and x >= 0
        except OverflowError:  # an integer past any float: 10**400
            return False

    return (
        all(isinstance(t, str) for t in (s.run_id, s.created_at, s.model, s.top_span, s.prompt_sha256))
        and s.status in ("finished", "aborted", "failed")  # a run still marked running is left to read_run
        and count(s.spans) and count(s.evaluations)
        and (s.spend_usd is None or amount(s.spend_usd))
        and (s.label is None or isinstance(s.label, str))
    )


def list_runs(runs_dir: Path, **where) -> list[RunSummary]:
    """Every run in the folder, oldest first; quick: a small summary.json per run is enough.

    A run that cannot be read is listed as `corrupt`, a folder of a run that never wrote its
    first event as `empty` (see `is_empty`), a run another process is writing as `running`.

    `where` filters (see `matches`): prompt (a hash prefix), label, tag, model, status.
    """
    out = []
    for run_id in run_ids(runs_dir):
        path = Path(runs_dir) / run_id
        summary = _stored_summary(path)
        if summary is None and is_empty(path):
            live = is_live(path)  # reserved a moment ago, its first event not yet written
            summary = RunSummary(run_id, "?", "running" if live else "empty", "?", 0, 0, None,
                                 "starting" if live else "never started: prompt-attr delete removes it")
        elif summary is None:
            try:
                summary = summarise(read_run(run_id, runs_dir))
            except PromptAttrError as exc:
                summary = RunSummary(run_id, "?", "corrupt", "?", 0, 0, None, str(exc)[:60])
        summary.tags = read_tags(path)
        if matches(summary, **where):
            out.append(summary)
    return out


def matches(s: RunSummary, prompt=None, label=None, tag=None, model=None, status=None) -> bool:
    """Whether a run passes the `ls` filters (None: any)."""
    return (
        (prompt is None or s.prompt_sha256.startswith(prompt))
        and (label is None or s.label == label)
        and (tag is None or tag in s.tags)
        and (model is None or s.model == model)
        and (status is None or s.status == status)
    )




TAGS = ("baseline", "experimental", "archived")


def read_tags(run_folder: Path) -> list[str]:
    """A run's tags; a missing or unreadable tags.json means none."""
    try:
        tags = json.loads((run_folder / "tags.json").read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return [t for t in tags if t in TAGS] if isinstance(tags, list) else []
