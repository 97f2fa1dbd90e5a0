"""Store addresses as they are printed and as they are used: URLs with their passwords hidden, a server's health
address without its credentials, and the form MLflow's client is given (a leaf: the stores, the tracker, the
importer and the report all use it)."""

from __future__ import annotations

import re
from pathlib import Path
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


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI, absolute and with ~ expanded (its ?query left off); None for any other URI
    and for an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].partition("?")[0]
    return Path(path).expanduser().resolve() if path and path != ":memory:" else None


def client_uri(uri: str) -> str:
    """`uri` as MLflow's client should get it: a SQLite path made absolute (and ~ expanded, as MLflowStore does).

    MLflow keeps one store per URI string for the life of the process, so a relative `sqlite:///mlflow.db` opened
    again after a change of working directory (the Python API, a notebook, a test) would reach the first folder's
    file. Other URIs are returned as they are."""
    path = sqlite_path(uri)
    sep, query = uri.partition("?")[1:]
    return uri if path is None else f"sqlite:///{path}{sep}{query}"


def mlflow_client(uri: str):
    """An MlflowClient for the tracking URI `uri` (see client_uri)."""
    from mlflow.tracking import MlflowClient  # here: the report's bundle reader uses this leaf without MLflow

    return MlflowClient(tracking_uri=client_uri(uri))
