"""Declarative study files (studies/*.toml): loading, validation and expansion into trials.

A study file holds no logic: its name, the claim ids it answers, a base config, the
factor(s) it ablates with their arms (each arm named after the one thing it changes),
the tuning protocol and per-profile overrides. See studies/README.md for the format.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from bench.claims import CLAIMS
from bench.config import ConfigError, TrialConfig
from bench.errors import BenchError

PROFILES = ("smoke", "quick", "full")


class StudyError(BenchError, ValueError):
    """A malformed study file or an unknown study; the message names the file, field and expected form."""


@dataclass(frozen=True)
class Tuning:
    """Per-arm learning-rate search on the validation split (TPE), before the final runs."""

    param: str = "lr"  # the config field tuned
    low: float = 1e-3  # search range, inclusive
    high: float = 1.0
    log: bool = True  # sample on a log scale
    trials: int = 8  # TPE trials per arm (the budget)
    seed: int = 100  # trial seed used while tuning (final runs use seeds 0..n-1)


@dataclass(frozen=True)
class Profile:
    seeds: int  # final runs per arm use seeds 0..seeds-1
    base: dict[str, Any] = field(default_factory=dict)  # config overrides for this profile
    tuning_trials: int | None = None  # overrides Tuning.trials
    arms: dict[str, list[str]] = field(default_factory=dict)  # factor -> the arms this profile runs (default all)


@dataclass(frozen=True)
class Arm:
    name: str  # e.g. "he+relu": the factor arms it combines
    overrides: dict[str, Any]
    factors: dict[str, str]  # factor name -> this arm's level


@dataclass(frozen=True)
class Literature:
    """A published figure a profile of the study reproduces: where its reference arm should land."""

    profile: str  # the profile at whose scale the figure applies (usually "full")
    arm: str  # the reference arm, e.g. "residual+d20"
    metric: str  # a record field, e.g. "test_acc"
    value: float  # the published value, same units as the record field (accuracies as fractions)
    source: str  # the publication and where in it, e.g. "He et al. 2016, Table 6: ResNet-20, 8.75% test error"


@dataclass(frozen=True)
class Study:
    name: str
    path: str
    description: str
    claims: tuple[str, ...]
    base: dict[str, Any]
    factors: dict[str, dict[str, dict[str, Any]]]  # factor -> arm name -> overrides (file order)
    tuning: Tuning | None
    profiles: dict[str, Profile]
    oom_retry: bool = True  # out of device memory: retry a trial once at half the batch size
    extras: tuple[str, ...] = ()  # measurements made once per study besides the trials (bench/extras.py)
    packable: bool = True  # false: every trial trains alone (the study measures wall time per trial)
    literature: tuple[Literature, ...] = ()  # published figures its profiles reproduce (the report sets them beside the runs)

    def arms(self, profile: str) -> list[Arm]:
        """The cross product of the factors' arms that `profile` runs, in file order."""
        chosen = self.profiles[profile].arms
        levels = [[(f, a, ov) for a, ov in arms.items() if f not in chosen or a in chosen[f]] for f, arms in self.factors.items()]
        out = []
        for combo in itertools.product(*levels):
            overrides: dict[str, Any] = {}
            for _, _, ov in combo:
                overrides.update(ov)
            out.append(Arm("+".join(a for _, a, _ in combo), overrides, {f: a for f, a, _ in combo}))
        return out

    def seeds(self, profile: str) -> list[int]:
        return list(range(self.profiles[profile].seeds))

    def tuning_trials(self, profile: str) -> int:
        if self.tuning is None:
            return 0
        p = self.profiles[profile]
        return self.tuning.trials if p.tuning_trials is None else p.tuning_trials

    def config(self, profile: str, arm: Arm, seed: int, **extra: Any) -> TrialConfig:
        """The trial config: base, then profile overrides, then the arm's, then `extra` (seed, tuned lr)."""
        from bench.engine.rules import make_config  # the engine, only when trials are made (the report never is)

        return make_config({**self.base, **self.profiles[profile].base, **arm.overrides, "seed": seed, **extra})


def studies_dir() -> Path:
    """$BENCH_STUDIES_DIR, else the repository's studies/ folder."""
    return Path(os.environ.get("BENCH_STUDIES_DIR") or Path(__file__).resolve().parents[2] / "studies")


def _expect(ok: bool, path: Path, where: str, expected: str) -> None:
    if not ok:
        raise StudyError(f"{path}: field '{where}': expected {expected}")


def _check_config(
    path: Path, where: str, overrides: Any, context: dict[str, Any] | None = None, check: bool = True
) -> dict[str, Any]:
    """Type-check `overrides` now, not mid-study, on top of `context` (the study's base)."""
    _expect(isinstance(overrides, dict), path, where, "a table of config key = value")
    if not check:
        return dict(overrides)
    from bench.engine.rules import make_config  # the engine, only for check=True (the report loads with check=False)

    try:
        make_config({**(context or {}), **overrides})
    except ConfigError as exc:
        raise StudyError(f"{path}: field '{where}': {exc}") from None
    return dict(overrides)


def load_study(path: Path, check: bool = True) -> Study:
    """Parse and validate one study file; raise StudyError naming the file, field and expected form.

    check=False skips what needs the training engine (every config checked against the registries, the
    extras' names), so readers such as the report load study files without importing torch."""
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: not valid TOML: {exc}") from None
    known = {
        "name",
        "description",
        "claims",
        "base",
        "factors",
        "tuning",
        "profiles",
        "oom_retry",
        "extras",
        "packable",
        "literature",
    }
    for key in raw:
        _expect(key in known, path, key, f"one of {', '.join(sorted(known))}")
    _expect(isinstance(raw.get("name"), str) and raw["name"] == path.stem, path, "name", f"the file's stem {path.stem!r}")
    claims = raw.get("claims")
    _expect(
        isinstance(claims, list) and bool(claims) and all(c in CLAIMS for c in claims),
        path,
        "claims",
        f"a non-empty list of claim ids from: {', '.join(CLAIMS)}",
    )
    base = _check_config(path, "base", raw.get("base", {}), check=check)
    factors: dict[str, dict[str, dict[str, Any]]] = {}
    _expect(
        isinstance(raw.get("factors"), dict) and bool(raw["factors"]),
        path,
        "factors",
        "a table [factors.<name>] of arm = {config overrides}",
    )
    for fname, arms in raw["factors"].items():
        _expect(isinstance(arms, dict) and bool(arms), path, f"factors.{fname}", "a table of arm-name = {config overrides}")
        factors[fname] = {a: _check_config(path, f"factors.{fname}.{a}", ov, base, check) for a, ov in arms.items()}
    tuning = None
    if "tuning" in raw:
        t = raw["tuning"]
        _expect(isinstance(t, dict), path, "tuning", "a table with param, low, high, log, trials")
        try:
            tuning = Tuning(**t)
        except TypeError:
            raise StudyError(
                f"{path}: field 'tuning': expected keys among param, low, high, log, trials, seed; got {', '.join(t)}"
            ) from None
        _expect(tuning.param in TrialConfig.__dataclass_fields__, path, "tuning.param", "a config key such as lr")
        _expect(0 < tuning.low < tuning.high, path, "tuning.low/high", "0 < low < high")
        _expect(isinstance(tuning.trials, int) and tuning.trials >= 1, path, "tuning.trials", "an integer >= 1")
    profiles = {}
    _expect(
        isinstance(raw.get("profiles"), dict) and set(raw["profiles"]) == set(PROFILES),
        path,
        "profiles",
        "tables [profiles.smoke], [profiles.quick] and [profiles.full]",
    )
    for pname, p in raw["profiles"].items():
        where = f"profiles.{pname}"
        _expect(
            isinstance(p, dict) and isinstance(p.get("seeds"), int) and p["seeds"] >= 1, path, f"{where}.seeds", "an integer >= 1"
        )
        unknown = set(p) - {"seeds", "base", "tuning_trials", "arms"}
        _expect(not unknown, path, f"{where}.{next(iter(unknown), '')}", "one of seeds, base, tuning_trials, arms")
        arms = p.get("arms", {})
        for fname, names in arms.items():
            _expect(fname in factors, path, f"{where}.arms.{fname}", f"a factor name ({', '.join(factors)})")
            _expect(
                isinstance(names, list) and all(n in factors[fname] for n in names),
                path,
                f"{where}.arms.{fname}",
                f"a list of arms of factor {fname} ({', '.join(factors[fname])})",
            )
        profiles[pname] = Profile(
            p["seeds"], _check_config(path, f"{where}.base", p.get("base", {}), base, check), p.get("tuning_trials"), arms
        )
    _expect(isinstance(raw.get("oom_retry", True), bool), path, "oom_retry", "true or false")
    _expect(isinstance(raw.get("packable", True), bool), path, "packable", "true or false")
    extras = raw.get("extras", [])
    _expect(isinstance(extras, list) and all(isinstance(e, str) for e in extras), path, "extras", "a list of extra names")
    if check:
        from .extras import EXTRAS

        _expect(all(e in EXTRAS for e in extras), path, "extras", f"a list of names from: {', '.join(EXTRAS)}")
    literature = _literature(path, raw.get("literature", []), factors)
    study = Study(
        raw["name"],
        str(path),
        raw.get("description", ""),
        tuple(claims),
        base,
        factors,
        tuning,
        profiles,
        raw.get("oom_retry", True),
        tuple(extras),
        raw.get("packable", True),
        literature,
    )
    for pname in PROFILES if check else ():  # every arm's full config must be valid in every profile
        for arm in study.arms(pname):
            try:
                study.config(pname, arm, 0)
            except ConfigError as exc:
                raise StudyError(f"{path}: arm '{arm.name}' in profile '{pname}': {exc}") from None
    return study


def _literature(path: Path, items: Any, factors: dict[str, dict[str, Any]]) -> tuple[Literature, ...]:
    """The [[literature]] entries: each names a profile, an arm of this study, a record metric, a value and its source."""
    _expect(isinstance(items, list), path, "literature", "a list of [[literature]] tables")
    out = []
    for i, item in enumerate(items):
        where = f"literature[{i}]"
        _expect(
            isinstance(item, dict) and set(item) == {"profile", "arm", "metric", "value", "source"},
            path,
            where,
            "a table with profile, arm, metric, value and source",
        )
        _expect(item["profile"] in PROFILES, path, f"{where}.profile", f"one of {', '.join(PROFILES)}")
        levels = item["arm"].split("+") if isinstance(item["arm"], str) else []
        _expect(
            len(levels) == len(factors) and all(lv in arms for lv, arms in zip(levels, factors.values())),
            path,
            f"{where}.arm",
            f"an arm name: one level of each factor joined by '+' ({' + '.join(factors)})",
        )
        _expect(
            isinstance(item["value"], (int, float)) and not isinstance(item["value"], bool),
            path,
            f"{where}.value",
            "a number in the record field's units (accuracies as fractions)",
        )
        _expect(
            isinstance(item["metric"], str) and isinstance(item["source"], str) and bool(item["source"]),
            path,
            where,
            "metric and source as strings",
        )
        out.append(Literature(item["profile"], item["arm"], item["metric"], float(item["value"]), item["source"]))
    return tuple(out)


def list_studies() -> list[Study]:
    return [load_study(p) for p in sorted(studies_dir().glob("*.toml"))]


def get_study(name: str) -> Study:
    """A study by name (studies/<name>.toml) or by the path of a study file anywhere (any name ending in .toml);
    either is validated the same way."""
    if name.endswith(".toml"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise StudyError(f"study file {path} does not exist (a study is a name from studies/ or a path to a .toml file)")
        return load_study(path)
    path = studies_dir() / f"{name}.toml"
    if not path.exists():
        valid = ", ".join(p.stem for p in sorted(studies_dir().glob("*.toml")))
        raise StudyError(f"unknown study {name!r}; valid studies: {valid} (or the path of a .toml study file)")
    return load_study(path)
