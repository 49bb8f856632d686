"""Credentials never leave the process: URLs are shown and logged without them."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<userinfo>[^@/\s]*)@")
_PASSWORD_QUERY = re.compile(r"(?i)((?:password|passwd|pwd|pass|token|secret)=)[^&\s]+")


def redact_url(url: str) -> str:
    """``rtsp://user:pw@host/p`` → ``rtsp://***@host/p`` (also secrets in the query)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return _PASSWORD_QUERY.sub(r"\1***", urlunsplit(parts._replace(netloc=netloc)))


def redact_text(text: str) -> str:
    """Remove credentials of any URL inside free text (error messages, log lines)."""
    return _PASSWORD_QUERY.sub(r"\1***", _USERINFO.sub(r"\g<scheme>***@", str(text)))
