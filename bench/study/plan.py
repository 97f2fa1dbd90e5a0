"""`bench study NAME --plan`: what a profile would train (trials, images, epochs) and about how long it would
take on this device, before anything is trained or any store is opened."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bench.config import TrialConfig

from .files import Study, get_study

CIFAR_TRAIN, CIFAR_TEST, CLASSES = 50_000, 10_000, 10
SOURCE_CLASSES = 5  # transfer: the source trains on classes 0-4, the target on 5-9


@dataclass
class Cost:
    """What one trial trains and evaluates: images per epoch, epochs, evaluated images over the run."""

    train_per_epoch: int
    epochs: int
    eval_images: int
    pretrain_images: int = 0  # transfer: the source's training images (trained once per source, then cached)

    @property
    def train_images(self) -> int:
        return self.train_per_epoch * self.epochs


def trial_cost(cfg: TrialConfig) -> Cost:
    """Images one trial of `cfg` trains and evaluates (the splits' sizes as bench.data computes them)."""
    if cfg.task == "transfer":
        per_class_left = CIFAR_TRAIN // CLASSES - cfg.n_val // SOURCE_CLASSES
        train = (cfg.per_class or per_class_left) * SOURCE_CLASSES
        test = cfg.n_test or CIFAR_TEST // 2
        pretrained_here = cfg.source == "cifar5" and cfg.transfer != "scratch"  # ImageNet weights come ready-made
        source = (cfg.n_train or CIFAR_TRAIN // 2) * cfg.pretrain_epochs if pretrained_here else 0
    else:
        train = cfg.n_train or CIFAR_TRAIN - cfg.n_val
        test = cfg.n_test or CIFAR_TEST
        source = 0
    per_epoch_eval = min(cfg.eval_train_size, train) + cfg.n_val + test + cfg.probe_size
    return Cost(train, cfg.epochs, per_epoch_eval * (cfg.epochs + 1), source)


@dataclass
class Line:
    stage: str  # "tune" or "final"
    arm: str
    trials: int
    cost: Cost
    macs: int
    seconds: float


def plan_lines(study: Study, profile: str, device_kind: str) -> tuple[list[Line], str]:
    """One line per (stage, arm) with its trial count, per-trial cost and estimated seconds; the estimate's source."""
    from bench.perf.throughput import macs_per_image, throughput

    sources = set()
    tune_seed = study.tuning.seed if study.tuning else 0
    lines = []
    sources_seen: set[str] = set()
    for arm in study.arms(profile):
        for stage, n, seed in (("tune", study.tuning_trials(profile), tune_seed), ("final", len(study.seeds(profile)), 0)):
            if n == 0:
                continue
            cfg = study.config(profile, arm, seed)
            cost, macs, rate = trial_cost(cfg), macs_per_image(cfg), throughput(device_kind, cfg.model)
            sources.add(rate.source)
            seconds = n * rate.seconds(macs, cost.train_images, cost.eval_images)
            if cost.pretrain_images:  # one source per source config (its cache key): trained once, cached for the rest
                from bench.engine.transfer import source_key

                seeds = [seed] if stage == "tune" else study.seeds(profile)
                new = {source_key(replace(cfg, seed=s), "") for s in seeds} - sources_seen
                sources_seen |= new
                seconds += len(new) * rate.seconds(macs, cost.pretrain_images, 0)
            lines.append(Line(stage, arm.name, n, cost, macs, seconds))
    return lines, " | ".join(sorted(sources))


def device_kind(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else "cpu"


def default_profile() -> tuple[str, str]:
    """The profile a study runs at when none is given, and why: full on a CUDA device, else quick."""
    import torch

    if torch.cuda.is_available():
        return "full", f"CUDA device found ({torch.cuda.get_device_name(0)})"
    return "quick", "no CUDA device found; the full profile is meant for a GPU"


def plan_summary(study: Study, profile: str, kind: str) -> dict[str, Any]:
    """The plan as data (`--plan --json`, `bench.plan`): study, profile, device kind, one entry per (stage, arm) with
    its trials, images, epochs and estimated seconds, the totals, and what the estimate comes from."""
    lines, source = plan_lines(study, profile, kind)
    stages = [
        {
            "stage": line.stage,
            "arm": line.arm,
            "trials": line.trials,
            "images_per_epoch": line.cost.train_per_epoch,
            "epochs": line.cost.epochs,
            "train_images": line.trials * line.cost.train_images,
            "eval_images": line.trials * line.cost.eval_images,
            "pretrain_images_per_trial": line.cost.pretrain_images,
            "macs_per_image": line.macs,
            "seconds": line.seconds,
        }
        for line in lines
    ]
    total = {
        "trials": sum(s["trials"] for s in stages),
        "train_images": sum(s["train_images"] for s in stages),
        "seconds": sum(s["seconds"] for s in stages),
    }
    return {"study": study.name, "profile": profile, "device": kind, "estimate_from": source, "stages": stages, "total": total}


def run_plan(args) -> int:
    from bench.paths import JsonOut
    from bench.perf.throughput import fmt_seconds

    json_out = JsonOut(getattr(args, "json", None))  # checked before anything is estimated
    study = get_study(args.name)
    profile = args.profile or default_profile()[0]
    kind = device_kind(args.device)
    plan = plan_summary(study, profile, kind)
    with json_out.human() as out:
        print(f"plan: study {study.name}, profile {profile}, device {kind} (nothing is trained, no store is opened)", file=out)
        print(
            f"{'stage':<6} {'arm':<28} {'trials':>6} {'images/epoch':>12} {'epochs':>6} {'MMAC/img':>9} {'est. time':>10}",
            file=out,
        )
        for s in plan["stages"]:
            print(
                f"{s['stage']:<6} {s['arm']:<28} {s['trials']:>6} {s['images_per_epoch']:>12,} {s['epochs']:>6} "
                f"{s['macs_per_image'] / 1e6:>9.1f} {fmt_seconds(s['seconds']):>10}",
                file=out,
            )
        total = plan["total"]
        print(
            f"total: {total['trials']} trials, {total['train_images'] / 1e6:.1f} M training images, estimated "
            f"{fmt_seconds(total['seconds'])} on {kind}",
            file=out,
        )
        print(f"estimate from: {plan['estimate_from']}", file=out)
    json_out.write(plan)
    return 0
