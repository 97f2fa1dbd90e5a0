"""`bench speed` (images/s of every way the engine trains, one row per variant as soon as it is measured) and
`bench gpu-check` (everything a GPU machine should confirm, in one command)."""

from __future__ import annotations

import argparse

from bench.config import ConfigError


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"pack sizes must be >= 1, got {text!r}")
    return values


def cmd_speed(args) -> int:
    from bench.paths import JsonOut

    from .speed import MODELS, run_speed

    if args.model not in MODELS:
        raise ConfigError(f"unknown model {args.model!r}; valid: {', '.join(MODELS)}")
    if args.epochs is not None and args.epochs < 2:
        raise ConfigError("--epochs must be >= 2 (the first epoch is warm-up and is not timed)")
    if args.n_train is not None and (args.n_train < 0 or args.n_train % 10):
        raise ConfigError("--n-train must be a non-negative multiple of 10 (0 = the whole training set)")
    json_out = JsonOut(args.json)  # checked before anything is measured
    with json_out.human() as out, json_out.file_for_tool("speed.json") as path:
        rows = run_speed(
            args.model,
            args.device,
            args.quick,
            args.packs,
            args.n_train,
            args.epochs,
            args.batch_size,
            args.workers,
            args.compile,
            args.data_dir,
            args.procs,
            str(path) if path else None,
            out=out,
        )
    return 1 if any("error" in r for r in rows if r["variant"] != "compiled") else 0


def cmd_gpu_check(args) -> int:
    import torch

    from bench.paths import JsonOut

    from .gpucheck import CORE_STUDIES, run_gpu_check

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("no CUDA device here: gpu-check is for a machine with a GPU (--device cpu runs it on the CPU)")
    if args.epochs < 2:
        raise ConfigError("--epochs must be >= 2 (the first epoch is warm-up and is not timed)")
    json_out = JsonOut(args.json)  # checked before anything is measured
    studies = tuple(s for s in args.studies.split(",") if s) if args.studies is not None else CORE_STUDIES
    with json_out.human() as out, json_out.file_for_tool("gpu-check.json") as path:
        return run_gpu_check(args.device, args.n_train, args.epochs, studies, args.data_dir, str(path), out=out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "speed",
        help="images/s of a naive DataLoader loop vs the engine: eager, CUDA graphs, packs, processes",
        description="Train the same model on the same images every way the engine can (each in fresh processes), "
        "print each row as soon as it is measured, then the ratios; the table goes to --json and to the cache "
        "that `bench study --plan` and the default --pack/--workers read.",
    )
    p.add_argument(
        "--model", default="cnn", help="cnn (the quick profiles' small CNN), resnet20 or mlp (3 x 256 units) (default cnn)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--quick",
        action="store_true",
        help="the quick profiles' CNN on 5,000 images, 2 epochs, packs 1,2 (about a minute on 2 CPU cores)",
    )
    p.add_argument(
        "--packs",
        type=_ints,
        help="trials per process to measure, fused (vmap) and side by side (streams; CUDA) "
        "(default: 1,4,8 on CUDA, 1,4 on the CPU; --quick: 1,2)",
    )
    p.add_argument("--procs", type=_ints, help="processes sharing the GPU to measure (default 1,2 on CUDA; none on the CPU)")
    p.add_argument("--n-train", type=int, help="training images (default: 5,000 on the CPU, all on CUDA)")
    p.add_argument(
        "--epochs", type=int, help="epochs per variant, the first untimed (default 3 on the CPU, 2 on CUDA; --quick: 2)"
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, help="DataLoader workers of the naive loop (default min(4, cores))")
    p.add_argument("--compile", action="store_true", help="also measure the eager trial through torch.compile")
    p.add_argument(
        "--json", metavar="FILE|-", help="also write the table as JSON to FILE, or to stdout with - (the rest on stderr)"
    )
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_speed)
    p = sub.add_parser(
        "gpu-check", help="on a GPU: bench speed for ResNet-20 and the CNN, the engine's checks, smoke runs of the core studies"
    )
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--n-train", type=int, help="training images for the speed runs (default: all)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per speed variant, the first untimed (default 2)")
    p.add_argument("--studies", help="comma-separated studies to smoke-run (default: the six core studies)")
    p.add_argument(
        "--json",
        metavar="FILE|-",
        default="gpu-check.json",
        help="where to write everything measured as JSON: FILE, or stdout with - (the rest on stderr) (default gpu-check.json)",
    )
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_gpu_check)
