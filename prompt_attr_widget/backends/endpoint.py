"""Where prompts may be sent: the endpoint policy checked before any call.

A prompt (and the API key in its Authorization header) sent over plain
http can be read by anyone on the network path, so plain http is allowed
only to this machine (loopback), where the traffic never leaves it, or
when the user says the network is trusted (`allow_insecure=True`,
`--allow-insecure`). The check runs where the backend is resolved, before
the first request, and its messages show the URL without credentials.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ..core.errors import UsageError
from ..core.identity import public_url


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) or the name `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False  # another name: it may resolve anywhere
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


def check_endpoint(url: str | None, allow_insecure: bool = False) -> None:
    """Raise UsageError unless prompts may go to `url` (None: the official https API)."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        shown, host = public_url(url), parts.hostname
    except ValueError:  # a bad port or bracket: urlsplit only notices when asked
        raise UsageError("the base URL is not a valid URL: give one like https://host/v1") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(
            f"the base URL {shown!r} must start with https:// (or http:// for a server on this machine)"
        )
    if not host:
        raise UsageError(f"the base URL {shown!r} names no host: give one like https://host/v1")
    if parts.scheme == "http" and not allow_insecure and not is_loopback(host):
        raise UsageError(
            f"refusing to send prompts to {shown} over plain http: the host is not this machine, so the "
            "prompts and the API key would cross the network unencrypted; use https://, or pass "
            "--allow-insecure (allow_insecure=True) if the network is trusted"
        )
