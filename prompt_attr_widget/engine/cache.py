"""A content-addressed disk cache of completions and embeddings.

The key is the SHA-256 of what determines the answer (backend, model,
model fingerprint, server URL without credentials, messages, parameters),
never of the API key, so no identical call is paid for twice and nothing
secret is ever hashed into a file name or a row.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..backends.base import BackendInfo

SIZE_LIMIT = 2 * 1024**3


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
    """

    def __init__(self, directory: Path | None, read_only: bool = False):
        self._cache = None
        self.read_only = read_only
        if directory is not None:
            import diskcache

            directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(directory), size_limit=SIZE_LIMIT)

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    def get(self, key: str):
        return None if self._cache is None else self._cache.get(key)

    def set(self, key: str, value) -> None:
        if self._cache is not None and not self.read_only:
            self._cache.set(key, value)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
