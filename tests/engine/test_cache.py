"""A broken call cache never stops a run: one warning, the run finishes, nothing is bought twice.

The cache folder is really broken here (garbage bytes in its SQLite file, a
database with overwritten pages, a file where the folder should be), or its
disk fails mid-run (diskcache's write raising ENOSPC or SQLite's "database
or disk is full", its read raising "database disk image is malformed").
A surrogate run with the embedding scorer is used because a clean run of it
already meets its own answers again (identical answers need one embedding):
the cache saving those calls must go on saving them when the disk fails.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import diskcache
import pytest

import prompt_attr
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.engine.cache import CallCache

PROMPT = "It was late. The Blue Falcon landed safely. Alpha went home. My cat slept. Bravo Charlie waited."
OPTIONS = {"method": "surrogate", "scorer": "embedding", "masks": 16}


def cache_folder() -> Path:
    return Path(os.environ["PROMPT_ATTR_CACHE_DIR"])


def run(runs_dir, **kw):
    backend = FakeBackend()
    result = prompt_attr.attribute(PROMPT, backend=backend, runs_dir=runs_dir, **OPTIONS, **kw)
    return result, backend.calls + backend.embed_calls


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """A run on an empty, working cache: its calls and its attribution."""
    monkeypatch.setenv("PROMPT_ATTR_CACHE_DIR", str(tmp_path / "clean-cache"))
    result, bought = run(tmp_path / "clean-runs")
    monkeypatch.setenv("PROMPT_ATTR_CACHE_DIR", str(tmp_path / "cache"))
    assert result.status == "finished" and result.record.spend.cache_hits > 0  # it meets its own answers
    assert bought == result.record.spend.calls
    return result, bought


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prompt_attr" and r.levelno == logging.WARNING]


def assert_like_a_clean_run(result, bought, clean) -> None:
    expected, expected_calls = clean
    assert result.status == "finished", result.record.reason
    assert bought == expected_calls == result.record.spend.calls  # no answer bought twice
    assert result.record.attribution == expected.record.attribution


def garbage(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "cache.db").write_bytes(os.urandom(64 * 1024))


def malformed(folder: Path) -> None:
    """A real cache of 500 answers whose key index then has its root page overwritten:
    it opens, and its first lookup finds the database malformed (mid-run)."""
    cache = diskcache.Cache(str(folder))
    for i in range(500):
        cache.set(f"answer {i}", {"output": "x" * 200, "i": i})
    cache.close()
    db = sqlite3.connect(folder / "cache.db")
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'Cache_key_raw'").fetchone()
    (page,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(folder / "cache.db", "r+b") as fh:
        fh.seek((root - 1) * page)
        fh.write(b"\xff" * page)
    diskcache.Cache(str(folder)).close()  # it still opens


def a_file(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder", "utf-8")


BROKEN = {
    "garbage": (garbage, "file is not a database"),
    "malformed": (malformed, "database disk image is malformed"),
    "a-file": (a_file, "a file is there, not a folder"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_cache_folder_warns_once_and_the_run_finishes(kind, clean, runs_dir, caplog):
    make, reason = BROKEN[kind]
    make(cache_folder())
    caplog.set_level(logging.WARNING, logger="prompt_attr")
    result, bought = run(runs_dir)
    assert_like_a_clean_run(result, bought, clean)
    (line,) = warnings_of(caplog)
    assert f"call cache at {cache_folder()} cannot be read ({reason}); going on without it" in line
    assert "delete or move it to start a fresh cache" in line


class FailingAfter:
    """Patch a diskcache.Cache method to raise `exc` from its n-th call on."""

    def __init__(self, monkeypatch, name: str, n: int, exc: Exception):
        self.calls, self.failed = 0, 0
        real = getattr(diskcache.Cache, name)

        def method(cache, *args, **kwargs):
            self.calls += 1
            if self.calls >= n:
                self.failed += 1
                raise exc
            return real(cache, *args, **kwargs)

        monkeypatch.setattr(diskcache.Cache, name, method)
        self.restore = lambda: monkeypatch.setattr(diskcache.Cache, name, real)


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                 sqlite3.OperationalError("database or disk is full")], ids=["ENOSPC", "sqlite-full"])
def test_a_full_disk_mid_run_loses_no_answer(exc, clean, runs_dir, caplog, monkeypatch):
    writes = FailingAfter(monkeypatch, "set", 4, exc)  # three answers reach the disk, then it is full
    caplog.set_level(logging.WARNING, logger="prompt_attr")
    result, bought = run(runs_dir)
    assert_like_a_clean_run(result, bought, clean)
    assert writes.failed == 1  # the disk is not asked again once it failed
    (line,) = warnings_of(caplog)
    assert f"call cache at {cache_folder()} cannot be written ({_reason(exc)})" in line
    writes.restore()  # the disk has room again: what reached it is served
    again, bought = run(runs_dir)
    assert again.record.spend.cache_hits >= 3 and bought == clean[1] - 3


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) else str(exc)


def test_a_read_failing_mid_run_loses_no_answer(clean, runs_dir, caplog, monkeypatch):
    """The database breaks after a few reads: answers this run bought and stored before are
    not bought again (they are kept in memory for the run)."""
    reads = FailingAfter(monkeypatch, "get", 12, sqlite3.DatabaseError("database disk image is malformed"))
    caplog.set_level(logging.WARNING, logger="prompt_attr")
    result, bought = run(runs_dir)
    assert_like_a_clean_run(result, bought, clean)
    assert reads.failed == 1
    (line,) = warnings_of(caplog)
    assert "cannot be read (database disk image is malformed); going on without it" in line


def test_cache_off_and_read_only_keep_their_meaning(tmp_path):
    """cache=False asks every time, redact (read_only) stores nothing, even in memory."""
    off = CallCache(None)
    off.set("k", 1)
    assert off.get("k") is None and not off.enabled
    read_only = CallCache(tmp_path / "ro", read_only=True)
    read_only.set("k", 1)
    assert read_only.get("k") is None and read_only.enabled
    read_only.close()


def test_the_cli_prints_one_warning_line_and_no_traceback(tmp_path, runs_dir):
    """Through the console command, with a corrupted cache file: exit 0, one warning, the result."""
    folder = tmp_path / "cache"
    garbage(folder)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(PROMPT, "utf-8")
    env = {**os.environ, "PROMPT_ATTR_CACHE_DIR": str(folder), "PROMPT_ATTR_RUNS_DIR": str(runs_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "prompt_attr_widget.cli", "run", str(prompt), "--model", "fake", "--no-color",
         "--method", "surrogate", "--scorer", "embedding", "--masks", "16"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warnings == [f"prompt-attr: warning: call cache at {folder} cannot be read (file is not a database); "
                        "going on without it; delete or move it to start a fresh cache"]
    assert "finished" in done.stdout
    (cache_db,) = folder.iterdir()
    assert cache_db.name == "cache.db"  # left where it was, for the user to delete or inspect
