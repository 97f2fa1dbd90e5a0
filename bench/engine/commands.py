"""`bench train` (one trial, a table row per epoch); `bench list` lives with the studies (bench/study/commands.py)."""

from __future__ import annotations

import argparse
import sys

from bench.config import FIELDS, parse_overrides
from bench.paths import JsonOut

EPOCH_COLUMNS = [
    ("epoch", "{:>5}"),
    ("train_loss", "{:>10.4f}"),
    ("train_acc", "{:>9.3f}"),
    ("val_loss", "{:>8.4f}"),
    ("val_acc", "{:>7.3f}"),
    ("test_acc", "{:>8.3f}"),
    ("lr", "{:>9.2e}"),
    ("seconds", "{:>7.1f}"),
]


class TablePrinter:
    """Prints one row per epoch (the `log_epoch` logger interface of train_trial)."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        print("  ".join(f"{name:>{len(fmt.format(0)) if 'e' not in fmt else 9}}" for name, fmt in EPOCH_COLUMNS), file=stream)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        cells = [fmt.format(metrics.get(name, float("nan"))) for name, fmt in EPOCH_COLUMNS]
        print("  ".join(cells), file=self.stream, flush=True)


def cmd_train(args) -> int:
    from .loop import train_trial
    from .rules import make_config

    overrides = parse_overrides(args.overrides)
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    cfg = make_config(overrides)
    json_out = JsonOut(args.json)  # checked before anything trains
    with json_out.human() as out:
        print(
            f"training {cfg.model} ({cfg.activation}, init={cfg.init}, {cfg.optimizer} lr={cfg.lr}) for {cfg.epochs} "
            f"epochs, seed {cfg.seed}",
            file=out,
        )
        record = train_trial(cfg, logger=TablePrinter(out), progress=not args.no_progress)
        acc = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        print(
            f"\nstatus {record['status']}"
            + (f" at epoch {record['diverged_epoch']}" if record["diverged_epoch"] else "")
            + f" | test_acc {acc(record['test_acc'])} | val_acc {acc(record['val_acc'])} | train_acc {acc(record['train_acc'])}"
            + f" | {record['epochs_run']} epochs in {record['train_seconds']:.1f}s ({record['images_per_s']:.0f} images/s)"
            + f" | {record['device']} | {record['data_source']}",
            file=out,
        )
    json_out.write(record)
    if json_out.path is not None:
        print(f"record written: {json_out.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one trial: bench train model=cnn epochs=2 n_train=5000",
        description=f"Train one trial. Keys: {', '.join(FIELDS)}",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument(
        "--json", metavar="FILE|-", help="also write the trial's record as JSON to FILE, or to stdout with - (the rest on stderr)"
    )
    p.add_argument(
        "--data-dir", help="CIFAR-10 folder (cifar-10-batches-py or ImageFolder); default $BENCH_DATA_DIR, else ./data"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
