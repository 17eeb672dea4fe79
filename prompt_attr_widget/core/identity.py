"""Identity of a run's inputs: the prompt hash and credential-free URLs.

Runs of the same prompt, segmentation, model and generation settings share
`prompt_sha256`, which is how `ls --prompt` and comparisons group them. A
URL is stored and hashed only without user info, query or fragment, where
credentials hide.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit, urlunsplit

from .config import AttributionConfig
from .schema import Span


def prompt_sha256(prompt: str, config: AttributionConfig, spans: list[Span]) -> str:
    """SHA-256 of the canonical bundle that decides a run's answers."""
    bundle = {
        "prompt": prompt,
        "system": config.system,
        "segmentation": [[s.start, s.end] for s in spans],
        "model": config.model,
        "base_url": public_url(config.base_url),
        "params": {"max_tokens": config.max_tokens, "temperature": config.temperature, "seed": config.seed},
    }
    blob = json.dumps(bundle, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def public_url(url: str | None) -> str | None:
    """The URL without user info, query or fragment: safe to log and store."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets, or the URL is ambiguous
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
