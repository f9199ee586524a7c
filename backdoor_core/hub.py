"""Is the Hugging Face hub usable right now? Answered in seconds, so offline users get a plain message fast
instead of ~25 s of library retries. The real loading paths (hub model ids, ``hf:`` datasets) stay intact."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")


def offline_by_env() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` asks for offline mode."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def unreachable_reason(timeout: float = 3.0) -> str | None:
    """``None`` when the hub answers a TCP connection within ``timeout`` s, else why not, in words."""
    if offline_by_env():
        return "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    host = hub_host()
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or exc})"
    return None
