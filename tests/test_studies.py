"""Study files: every shipped study loads; malformed files fail naming file, field and expected form."""

import pytest

from bench.claims import CLAIMS
from bench.study.files import PROFILES, StudyError, get_study, list_studies, load_study

GOOD = """
name = "{name}"
claims = ["dropout"]
[base]
model = "mlp"
[factors.dropout]
"p0.0" = {{ dropout = 0.0 }}
"p0.5" = {{ dropout = 0.5 }}
[profiles.smoke]
seeds = 1
[profiles.quick]
seeds = 2
[profiles.full]
seeds = 3
"""


def write(tmp_path, text, name="mystudy"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text.format(name=name) if "{name}" in text else text)
    return path


def test_shipped_studies_are_valid_and_answer_known_claims():
    studies = list_studies()
    assert {s.name for s in studies} >= {"init", "activation", "optimizer", "dropout", "batchnorm", "resnet-depth"}
    for study in studies:
        assert set(study.claims) <= set(CLAIMS)
        for profile in PROFILES:
            arms = study.arms(profile)
            assert arms and len({a.name for a in arms}) == len(arms)
            assert study.seeds(profile) == list(range(study.profiles[profile].seeds))
        assert study.profiles["full"].seeds >= 3
        # quick's count is chosen by design (studies/README.md, "Seeds"): at least 3, at most the cap of 8, and the
        # description states it with the pilot figures that chose it
        quick = study.profiles["quick"].seeds
        assert 3 <= quick <= 8, study.name
        assert f"Seeds at quick: {quick} per arm" in " ".join(study.description.split()), study.name
    assert len(get_study("init").arms("quick")) == 6 * 2 * 2


def test_arm_configs_layer_base_profile_arm(tmp_path):
    study = load_study(write(tmp_path, GOOD))
    arm = study.arms("smoke")[1]
    cfg = study.config("smoke", arm, seed=4, lr=0.3)
    assert (arm.name, cfg.dropout, cfg.model, cfg.seed, cfg.lr) == ("p0.5", 0.5, "mlp", 4, 0.3)


@pytest.mark.parametrize(
    "edit, field, expected",
    [
        (lambda t: t.replace('claims = ["dropout"]', 'claims = ["nope"]'), "claims", "claim ids from"),
        (lambda t: t.replace('model = "mlp"', 'model = "transformer"'), "base", "unknown model 'transformer'"),
        (lambda t: t.replace("dropout = 0.5", 'dropout = "half"'), "factors.dropout.p0.5", "dropout expects float"),
        (lambda t: t.replace("[profiles.full]\nseeds = 3", ""), "profiles", "[profiles.full]"),
        (lambda t: t.replace("seeds = 2", "seeds = 0"), "profiles.quick.seeds", "an integer >= 1"),
        (lambda t: "sweep = 3\n" + t, "sweep", "one of"),
        (
            lambda t: t.replace("[profiles.smoke]\nseeds = 1", '[profiles.smoke]\nseeds = 1\narms = { dropout = ["p0.9"] }'),
            "profiles.smoke.arms.dropout",
            "a list of arms of factor dropout",
        ),
        (lambda t: t + "\n[tuning]\nlow = 1.0\nhigh = 0.1\n", "tuning.low/high", "0 < low < high"),
        (lambda t: t.replace("[base]", "[base\n"), None, "not valid TOML"),
        (lambda t: 'extras = ["fireworks"]\n' + t, "extras", "a list of names from: trajectories"),
    ],
)
def test_malformed_study_names_file_field_expected(tmp_path, edit, field, expected):
    path = write(tmp_path, edit(GOOD.format(name="mystudy")))
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    if field:
        assert f"field '{field}'" in message


def test_cli_malformed_study_and_unknown_study_exit_2(tmp_path, bench_cli):
    write(tmp_path, GOOD.replace('model = "mlp"', "model = 7"), name="broken")
    for name, expected in [
        ("broken", "field 'base': model expects str"),
        ("missing", "unknown study 'missing'; valid studies: broken"),
    ]:
        status, _, err = bench_cli("study", name, "--profile", "smoke", env={"BENCH_STUDIES_DIR": str(tmp_path)})
        assert status == 2 and expected in err and "Traceback" not in err, err
