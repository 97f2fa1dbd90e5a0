"""One meaning of --json in every command: `--json FILE` writes the JSON document to FILE (checked before any
work), `--json -` puts it alone on stdout with everything else on stderr; `bench --version`."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from bench.cli import main
from bench.study.files import list_studies


def test_version_names_the_project_python_and_the_libraries(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"ablation-bench {metadata.version('ablation-bench')}"
    named = dict(line.split(" ", 1) for line in lines[1:])
    assert {"python", "torch", "optuna", "mlflow-skinny"} <= set(named)
    assert named["torch"] == metadata.version("torch") and named["optuna"] == metadata.version("optuna")


def test_list_json_to_stdout_is_the_document_alone(bench_cli):
    code, out, err = bench_cli("list", "--json", "-")
    assert code == 0
    found = json.loads(out)  # nothing else on stdout
    assert [s["name"] for s in found["studies"]] == [s.name for s in list_studies()]
    assert {"models", "activations", "inits", "optimizers", "schedules", "normalizations"} == set(found["registries"])
    assert {"relu", "elu", "sigmoid"} <= {e["name"] for e in found["registries"]["activations"]}
    assert all(e["help"] for entries in found["registries"].values() for e in entries)
    assert "studies:" in err and "  relu" in err  # the human listing went to stderr


def test_list_json_to_a_file_keeps_the_listing_on_stdout(bench_cli, tmp_path):
    path = tmp_path / "list.json"
    code, out, _ = bench_cli("list", "--json", str(path))
    assert code == 0 and "studies:" in out
    assert {s["name"] for s in json.loads(path.read_text())["studies"]} == {s.name for s in list_studies()}


def test_plan_json_adds_up_and_matches_the_table(bench_cli):
    code, out, err = bench_cli("study", "optimizer", "--plan", "--profile", "smoke", "--device", "cpu", "--json", "-")
    assert code == 0
    plan = json.loads(out)
    assert (plan["study"], plan["profile"], plan["device"]) == ("optimizer", "smoke", "cpu")
    stages = plan["stages"]
    assert {s["stage"] for s in stages} <= {"tune", "final"} and stages
    assert plan["total"]["trials"] == sum(s["trials"] for s in stages)
    assert plan["total"]["seconds"] == pytest.approx(sum(s["seconds"] for s in stages))
    assert f"total: {plan['total']['trials']} trials" in err and plan["estimate_from"] in err
    table = [line.split() for line in err.splitlines() if line.split()[:1] in (["tune"], ["final"])]
    assert [(row[0], row[1], int(row[2])) for row in table] == [(s["stage"], s["arm"], s["trials"]) for s in stages]


def test_json_is_checked_before_any_work_and_refused_where_it_means_nothing(bench_cli, tmp_path):
    code, _, err = bench_cli("study", "optimizer", "--profile", "smoke", "--json", str(tmp_path / "x.json"))
    assert code == 2 and "--json goes with --plan" in err and len(err.strip().splitlines()) == 1
    blocked = tmp_path / "file"
    blocked.write_text("")
    code, out, err = bench_cli("study", "optimizer", "--plan", "--json", str(blocked / "plan.json"))
    assert code == 2 and err.startswith("error: --json") and "plan:" not in out
