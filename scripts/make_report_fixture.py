"""Make tests/fixtures/runs.json.gz: the report's test fixture, from real (tiny) study runs.

Runs every study in studies/ at its smoke profile, widened to --seeds seeds and --epochs
epochs (so the fixture has intervals, tests and curves to check), into a temporary
MLflow + Optuna store; loads the runs DataFrame exactly as `bench report` does
(report.load.load_runs) and writes it as gzipped JSON records (report.frame.write_runs).
The study extras the executions logged (e.g. the optimizer study's trajectories; format:
report/frame.py, "Extras") go beside it, as extras.json.gz (report.frame.write_extras).

    BENCH_DATA_DIR=/path/to/cifar10 python scripts/make_report_fixture.py

Takes about 10 minutes on 2 CPU cores; the file stays well under 2 MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "runs.json.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="output file (.json or .json.gz); the extras go beside it as extras.json.gz"
    )
    parser.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR"), help="CIFAR-10 folder (default $BENCH_DATA_DIR)")
    parser.add_argument("--seeds", type=int, default=2, help="final runs per arm (2: the fewest that give an interval)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (3: curves with a shape)")
    parser.add_argument("--studies", nargs="*", help="study names (default: every study in studies/)")
    parser.add_argument("--workdir", help="keep the MLflow/Optuna stores here (default: a temporary folder)")
    args = parser.parse_args(argv)

    from bench.study.files import get_study, list_studies
    from bench.study.runner import StudyRun
    from report.frame import write_extras, write_runs
    from report.load import load_extras, load_runs

    names = args.studies or [s.name for s in list_studies()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        uri, storage = f"sqlite:///{work / 'mlflow.db'}", f"sqlite:///{work / 'optuna.db'}"
        for name in names:
            study = get_study(name)
            smoke = study.profiles["smoke"]
            widened = dataclasses.replace(smoke, seeds=args.seeds, base={**smoke.base, "epochs": args.epochs})
            study = dataclasses.replace(study, profiles={**study.profiles, "smoke": widened})
            t0 = time.time()
            status = StudyRun(study, "smoke", storage, uri, args.data_dir, progress=False).run()
            print(f"{name}: {time.time() - t0:.0f} s (exit {status})", flush=True)
        df = load_runs(uri)
        write_runs(df, args.out)
        extras = _rounded(load_extras(uri))
        extras_out = Path(args.out).with_name("extras.json.gz")
        if extras:
            write_extras(extras, extras_out)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {len(df)} runs, {df.shape[1]} columns, {size / 1e6:.2f} MB")
    if extras:
        print(
            f"wrote {extras_out}: {', '.join(f'{s}/{n}' for s, v in extras.items() for n in v)}, "
            f"{extras_out.stat().st_size / 1e6:.2f} MB"
        )
    return 0


def _rounded(obj, digits: int = 5):
    """Floats to `digits` significant digits (the extras' grids and paths need no more; the file stays small)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


if __name__ == "__main__":
    sys.exit(main())
