"""Secrets kept out of what is printed: store URLs with their passwords hidden, and a server's health address
without its credentials (a leaf: the stores, the tracker, the importer and the report all use it)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """Hide the passwords in a URL (or a message holding one): postgresql://user:secret@host/db, a password
    holding an unencoded "@" (everything between "user:" and the last "@" before the host), and a
    password=... query parameter."""
    url = re.sub(r"(://[^:/@?#\s]+:)[^/?#\s]*@", r"\1***@", url)
    return re.sub(r"([?&;](?:password|passwd|pwd)=)[^&;#\s]*", r"\1***", url, flags=re.IGNORECASE)


def health_url(uri: str) -> str:
    """A tracking server's /health address, without any user:password@ of the URI (urllib would take it for
    part of the host name; the health check needs no credentials)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], path=parts.path.rstrip("/") + "/health"))
