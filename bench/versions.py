"""The versions of Python and of the libraries that measure and store results, read from the installed packages'
metadata without importing them (a leaf: records, bundles and `bench --version` share it)."""

from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("torch", "optuna", "mlflow", "mlflow-skinny")


def library_versions() -> dict[str, str]:
    """{"python": ..., "torch": ..., "optuna": ..., "mlflow": ...}: the libraries that are installed (mlflow-skinny
    where only it is)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
