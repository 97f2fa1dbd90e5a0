"""User-facing errors: each says what is wrong and how to fix it in one line; the CLI prints it and exits 2."""


class BenchError(Exception):
    """Base of every error the CLI reports as one line (exit status 2) instead of a traceback."""
