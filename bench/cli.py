"""The `bench` command: list registries, train one trial, run a study, write the report."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .config import FIELDS, ConfigError, make_config, parse_overrides

EPOCH_COLUMNS = [("epoch", "{:>5}"), ("train_loss", "{:>10.4f}"), ("train_acc", "{:>9.3f}"), ("val_loss", "{:>8.4f}"),
                 ("val_acc", "{:>7.3f}"), ("test_acc", "{:>8.3f}"), ("lr", "{:>9.2e}"), ("seconds", "{:>7.1f}")]


class TablePrinter:
    """Prints one row per epoch (the `log_epoch` logger interface of train_trial)."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        print("  ".join(f"{name:>{len(fmt.format(0)) if 'e' not in fmt else 9}}" for name, fmt in EPOCH_COLUMNS), file=stream)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        cells = [fmt.format(metrics.get(name, float("nan"))) for name, fmt in EPOCH_COLUMNS]
        print("  ".join(cells), file=self.stream, flush=True)


def cmd_list(args) -> int:
    from .components import ACTIVATIONS, INITS, OPTIMIZERS, SCHEDULES
    from .data import NORMALIZATIONS
    from .models import MODELS

    for title, reg in [("models", MODELS), ("activations", ACTIVATIONS), ("inits", INITS), ("optimizers", OPTIMIZERS),
                       ("schedules", SCHEDULES), ("normalizations", NORMALIZATIONS)]:
        print(f"{title}:")
        for name in reg:
            print(f"  {name:<18} {reg.help(name)}")
    try:
        from .studies import list_studies
    except ImportError:
        return 0
    print("studies:")
    for study in list_studies():
        print(f"  {study.name:<18} claims: {', '.join(study.claims)}")
    return 0


def cmd_train(args) -> int:
    from .train import train_trial

    overrides = parse_overrides(args.overrides)
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    cfg = make_config(overrides)
    print(f"training {cfg.model} ({cfg.activation}, init={cfg.init}, {cfg.optimizer} lr={cfg.lr}) for {cfg.epochs} epochs, seed {cfg.seed}",
          file=sys.stderr if args.json else sys.stdout)
    record = train_trial(cfg, logger=TablePrinter(sys.stderr if args.json else sys.stdout), progress=not args.no_progress)
    out = sys.stderr if args.json else sys.stdout
    acc = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"\nstatus {record['status']}" + (f" at epoch {record['diverged_epoch']}" if record["diverged_epoch"] else "")
          + f" | test_acc {acc(record['test_acc'])} | val_acc {acc(record['val_acc'])} | train_acc {acc(record['train_acc'])}"
          + f" | {record['epochs_run']} epochs in {record['train_seconds']:.1f}s ({record['images_per_s']:.0f} images/s)"
          + f" | {record['device']} | {record['data_source']}", file=out)
    if args.json:
        print(json.dumps(record, allow_nan=False, default=str))
    return 0


def cmd_study(args) -> int:
    try:
        from .runner import run_study_cli
    except ImportError:
        print("the study runner is not built yet: `bench train key=value ...` trains one trial", file=sys.stderr)
        return 2
    return run_study_cli(args)


def cmd_report(args) -> int:
    from report.build import build_report

    from .tracking import tracking_uri

    path = build_report(tracking_uri(args.tracking_uri), args.out, args.study)
    print(f"report written: {path}")
    return 0


def cmd_ui(args) -> int:
    import subprocess

    from .tracking import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    print(f"MLflow UI for {uri}: http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    return subprocess.call(cmd)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"pack sizes must be >= 1, got {text!r}")
    return values


def cmd_speed(args) -> int:
    from .speed import MODELS, run_speed

    if args.model not in MODELS:
        raise ConfigError(f"unknown model {args.model!r}; valid: {', '.join(MODELS)}")
    if args.epochs is not None and args.epochs < 2:
        raise ConfigError("--epochs must be >= 2 (the first epoch is warm-up and is not timed)")
    if args.n_train is not None and (args.n_train < 0 or args.n_train % 10):
        raise ConfigError("--n-train must be a non-negative multiple of 10 (0 = the whole training set)")
    rows = run_speed(args.model, args.device, args.quick, args.packs, args.n_train, args.epochs, args.batch_size,
                     args.workers, args.compile, args.data_dir)
    return 1 if any("error" in r for r in rows if r["variant"] != "compiled") else 0


def cmd_gpu_check(args) -> int:
    import torch

    from .gpucheck import CORE_STUDIES, run_gpu_check

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("no CUDA device here: gpu-check is for a machine with a GPU (--device cpu runs it on the CPU)")
    if args.epochs < 2:
        raise ConfigError("--epochs must be >= 2 (the first epoch is warm-up and is not timed)")
    studies = tuple(s for s in args.studies.split(",") if s) if args.studies is not None else CORE_STUDIES
    return run_gpu_check(args.device, args.n_train, args.epochs, studies, args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="ablation-bench: textbook deep-learning claims, measured on CIFAR-10")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print every registry (and study) with one line per entry")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("train", help="train one trial: bench train model=cnn epochs=2 n_train=5000",
                       description=f"Train one trial. Keys: {', '.join(FIELDS)}")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--json", action="store_true", help="print the final record as one JSON line on stdout (last line)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (cifar-10-batches-py or ImageFolder); default $BENCH_DATA_DIR, else ./data")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("study", help="run a declarative study from studies/")
    p.add_argument("name")
    p.add_argument("--profile", choices=["smoke", "quick", "full"])
    p.add_argument("--data-dir")
    p.add_argument("--storage", help="Optuna storage URL (default: journal file under the project)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the study on this machine (default 1)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per worker (default: cores / workers)")
    p.add_argument("--pack", type=int, default=0,
                   help="trials of one architecture trained together per process (default: 8 on CUDA, 1 on CPU)")
    p.add_argument("--parent-run", help=argparse.SUPPRESS)  # set by --workers for the extra processes
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_study)
    p = sub.add_parser("speed", help="images/s of a naive DataLoader loop vs this project's pipeline vs packed trials",
                       description="Train the same model on the same images three ways (each in a fresh process) and "
                                   "print images/s, seconds per epoch and peak memory, then speedup_vs_naive and packed_speedup.")
    p.add_argument("--model", default="cnn", help="cnn (the quick profiles' small CNN) or resnet20 (default cnn)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quick", action="store_true",
                   help="the quick profiles' CNN on 5,000 images, 2 epochs, packs 1,2 (about a minute on 2 CPU cores)")
    p.add_argument("--packs", type=_ints, help="packed trial counts to measure (default 1,4,8; --quick: 1,2)")
    p.add_argument("--n-train", type=int, help="training images (default: 5,000 on CPU, all on CUDA)")
    p.add_argument("--epochs", type=int, help="epochs per variant, the first untimed (default 3 on CPU, 4 on CUDA; --quick: 2)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, help="DataLoader workers of the naive loop (default min(4, cores))")
    p.add_argument("--compile", action="store_true", help="also measure the pipeline through torch.compile")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_speed)
    p = sub.add_parser("gpu-check", help="on a GPU: bench speed for the CNN and ResNet-20, a smoke run of every core study, a table")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--n-train", type=int, help="training images for the speed runs (default: all)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per speed variant, the first untimed (default 3)")
    p.add_argument("--studies", help="comma-separated studies to smoke-run (default: the six core studies)")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_gpu_check)
    p = sub.add_parser("report", help="write the report (HTML + Markdown) from the MLflow runs")
    p.add_argument("--out", default="report/out", help="output folder (default report/out)")
    p.add_argument("--study", help="only this study's claims")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("ui", help="open the MLflow UI over the project's store (bound to 127.0.0.1)")
    p.add_argument("--tracking-uri")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        os.environ["BENCH_DEBUG"] = "1"
    from .data import DataError
    from .studies import StudyError
    from .tracking import TrackingError

    try:
        return args.func(args)
    except (ConfigError, DataError, StudyError, TrackingError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
