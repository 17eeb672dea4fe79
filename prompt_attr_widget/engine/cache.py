"""A content-addressed disk cache of completions and embeddings.

The key is the SHA-256 of what determines the answer (backend, model,
model fingerprint, server URL without credentials, messages, parameters),
never of the API key, so no identical call is paid for twice and nothing
secret is ever hashed into a file name or a row.

The cache is an optimisation, never a reason for a run to fail. When its
folder cannot be opened, read or written (a corrupted SQLite file, "file
is not a database", a file where the folder should be, a full disk, a
lock held too long), CallCache logs one warning naming the folder and what
to do, and the run goes on without it: a read failure stops every use of
the disk for the rest of the run, a write failure stops the writes only
(hits still come from the disk). A broken cache is left where it is, never
moved or deleted: parallel runs share the folder, and an error that passes
(a lock) must not cost them their cache; deleting the folder starts a
fresh one. Every answer a run buys is also kept in memory for that run, so
an answer already bought is never bought again because the disk failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

from ..backends.base import BackendInfo
from ..core.text import safe_terminal_text

SIZE_LIMIT = 2 * 1024**3

log = logging.getLogger("prompt_attr")


def cache_key(kind: str, info: BackendInfo, payload: dict) -> str:
    identity = {
        "kind": kind,
        "backend": info.backend,
        "model": info.embed_model if kind == "embed" else info.model,
        "base_url": info.base_url,
        "gguf": info.fingerprint.get("gguf_sha256"),
        **payload,
    }
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class CallCache:
    """diskcache under the hood: process-safe, so parallel runs share it.

    `read_only` serves hits but stores nothing: with redact=True an answer
    may echo a secret of the prompt, and the cache keeps answers unmasked.
    Any failure of the disk is caught here (see the module docstring).
    """

    def __init__(self, directory: Path | None, read_only: bool = False):
        self._cache = None
        self.directory = directory
        self.read_only = read_only
        self.problems: list[str] = []  # the warnings given: at most one for reading, one for writing
        self._warned: set[str] = set()
        self._readable = self._writable = directory is not None
        # This run's own answers, whatever happens to the disk (only when the cache is on
        # and may be written: cache=False asks the model every time, redact stores nothing).
        self._bought: dict | None = {} if directory is not None and not read_only else None
        if directory is not None:
            try:
                import diskcache

                if directory.exists() and not directory.is_dir():
                    raise NotADirectoryError(20, "a file is there, not a folder")
                directory.mkdir(parents=True, exist_ok=True)
                self._cache = diskcache.Cache(str(directory), size_limit=SIZE_LIMIT)
            except Exception as exc:  # sqlite3, OSError, diskcache: the run goes on without it
                self._failed("read", exc)

    @property
    def enabled(self) -> bool:
        """Is the disk cache in use (opened, and no read of it has failed)?"""
        return self._cache is not None and self._readable

    def get(self, key: str):
        if self._bought is not None and key in self._bought:
            return self._bought[key]
        if self._cache is None or not self._readable:
            return None
        try:
            return self._cache.get(key)
        except Exception as exc:  # a malformed database, an unreadable value file, a lock
            self._failed("read", exc)
            return None

    def set(self, key: str, value) -> None:
        if self.read_only:
            return
        if self._bought is not None:
            self._bought[key] = value
        if self._cache is None or not self._readable or not self._writable:
            return
        try:
            self._cache.set(key, value)
        except Exception as exc:  # a full disk, a read-only folder, a malformed database
            self._failed("write", exc)

    def close(self) -> None:
        if self._cache is not None:
            with contextlib.suppress(Exception):  # nothing to lose: every answer is in the run already
                self._cache.close()
            self._cache = None

    def _failed(self, what: str, exc: BaseException) -> None:
        """Stop using the disk (all of it after a read failure, its writes after a write
        failure) and say so once, with the folder and what to do."""
        self._writable = False
        if what == "read":
            self._readable = False
            message = (f"call cache at {self.directory} cannot be read ({_reason(exc)}); going on without it; "
                       "delete or move it to start a fresh cache")
        else:
            message = (f"call cache at {self.directory} cannot be written ({_reason(exc)}); going on without "
                       "storing this run's answers; free some space, or delete or move it")
        if what not in self._warned:
            self._warned.add(what)
            self.problems.append(message)
            log.warning("prompt-attr: warning: %s", safe_terminal_text(message))


def _reason(exc: BaseException) -> str:
    """The error in a few words: its strerror (OSError) or message, else its type."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]
