"""What a study prints while it runs: a bar on a terminal, one plain line per finished trial otherwise.

No carriage-return frames in a log file or CI; nothing at all with --no-progress.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Trials finished out of `total` (every worker's, as the stores count them)."""

    def __init__(self, total: int, done: int, label: str, enabled: bool = True, stream: TextIO | None = None):
        stream = stream or sys.stderr
        self.total, self.done, self.enabled = total, done, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.monotonic()
        self.bar = (
            tqdm(total=total, initial=done, desc=label, unit="trial", dynamic_ncols=True, file=stream) if self.tty else None
        )

    def status(self, text: str) -> None:
        """What is training now (the bar's postfix; plain output prints only finished trials)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def finished(self, done: int, line: str) -> None:
        """A trial ended: `done` trials are finished in all; `line` says which and how it went."""
        self.done = done
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()
        elif self.enabled:
            elapsed = time.monotonic() - self.t0
            print(f"[{done}/{self.total}] {line} ({elapsed:.0f} s elapsed)", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def trial_line(stage: str, arm: str, seed: int, record: dict | None, failure: str | None = None) -> str:
    """One finished trial in words, e.g. "final he+relu seed=1: ok, val_acc 0.412, 12.3 s"."""
    head = f"{stage} {arm} seed={seed}"
    if record is None:
        return f"{head}: failed ({failure})"
    acc = record.get("best_val_acc")
    return f"{head}: {record['status']}" + (f", val_acc {acc:.3f}" if acc is not None else "") + f", {record['seconds']:.1f} s"
