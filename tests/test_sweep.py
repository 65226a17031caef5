"""Sweeps, pure: the sweep: section's checks, the trials it makes, plan, the ranking."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import base_config

from cloudtrain.changes import config_digest
from cloudtrain.cli import main
from cloudtrain.config import load_config, validate_config
from cloudtrain.errors import ConfigError
from cloudtrain.sweep import records_name, trial_config
from cloudtrain.sweep_report import SweepReport, ranked
from cloudtrain.trials import SweepConfig, Trial, TrialContext, make_trials

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def sweep(**fields: Any) -> SweepConfig:
    return SweepConfig.model_validate(
        {"objective": "acc", "goal": "max", **fields},
    )


def write(tmp_path: Path, **sections: Any) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('acc=1')\n")
    path = tmp_path / "cloudtrain.yaml"
    config = base_config(metrics=["acc", "loss"], hyperparameters={"epochs": 3}, **sections)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def problems(tmp_path: Path, sweep_section: Any, **sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, sweep=sweep_section, **sections))
    return [str(problem) for problem in caught.value.problems]


# -- trials -------------------------------------------------------------------------------


def test_grid_is_every_combination_in_order_the_last_parameter_fastest() -> None:
    trials = make_trials(sweep(parameters={"lr": [0.1, 0.01], "epochs": [10, 20, 30]}))
    assert [t.number for t in trials] == [1, 2, 3, 4, 5, 6]
    assert [dict(t.values) for t in trials[:4]] == [
        {"lr": 0.1, "epochs": 10},
        {"lr": 0.1, "epochs": 20},
        {"lr": 0.1, "epochs": 30},
        {"lr": 0.01, "epochs": 10},
    ]


def test_grid_trials_cap_the_combinations() -> None:
    trials = make_trials(sweep(parameters={"lr": [1, 2, 3], "depth": [4, 5]}, trials=4))
    assert len(trials) == 4 and dict(trials[-1].values) == {"lr": 2, "depth": 5}


def test_a_range_is_gridded_by_steps_integers_by_their_bounds_types() -> None:
    ints = make_trials(sweep(parameters={"epochs": {"min": 10, "max": 40, "steps": 4}}))
    assert [t.values["epochs"] for t in ints] == [10, 20, 30, 40]
    floats = make_trials(sweep(parameters={"lr": {"min": 0.0, "max": 1, "steps": 3}}))
    assert [t.values["lr"] for t in floats] == [0.0, 0.5, 1.0]
    logs = make_trials(
        sweep(parameters={"lr": {"min": 0.001, "max": 0.1, "steps": 3, "log": True}})
    )
    assert [t.values["lr"] for t in logs] == [0.001, 0.01, 0.1]


def test_a_float_range_finer_than_its_printed_values_grids_no_trial_twice() -> None:
    # 1000 steps across 1e-16 round to one value at 12 significant digits: one trial, not
    # 1000 trials with the same hyperparameters (and the same run records and lease).
    trials = make_trials(
        sweep(parameters={"lr": {"min": 0.001, "max": 0.0010000000000001, "steps": 1000}})
    )
    values = [json.dumps(dict(t.values)) for t in trials]
    assert len(values) == len(set(values)) == 1


def test_random_draws_are_the_same_for_the_same_seed_and_stay_in_range() -> None:
    section = {
        "strategy": "random",
        "trials": 20,
        "parameters": {
            "epochs": {"min": 10, "max": 40},
            "lr": {"min": 1e-4, "max": 1e-1, "log": True},
            "opt": ["sgd", "adam"],
        },
    }
    first, again = make_trials(sweep(**section)), make_trials(sweep(**section))
    assert first == again
    assert first != make_trials(sweep(**section, seed=1))
    assert len({json.dumps(dict(t.values)) for t in first}) == 20  # no trial twice
    for trial in first:
        assert isinstance(trial.values["epochs"], int) and 10 <= trial.values["epochs"] <= 40
        assert isinstance(trial.values["lr"], float) and 1e-4 <= trial.values["lr"] <= 1e-1
        assert trial.values["opt"] in ("sgd", "adam")


def test_random_refuses_more_distinct_trials_than_the_space_holds() -> None:
    with pytest.raises(ConfigError) as caught:
        make_trials(sweep(strategy="random", trials=5, parameters={"opt": ["a", "b"]}))
    assert caught.value.field == "sweep.trials"


def test_a_trial_trains_its_values_over_the_hyperparameters_and_no_sweep(
    tmp_path: Path,
) -> None:
    config = load_config(
        write(tmp_path, sweep={"parameters": {"lr": [0.1]}, "objective": "acc", "goal": "max"})
    )
    trial = make_trials(config.sweep)[0] if config.sweep else None
    assert trial is not None
    one = trial_config(config, trial)
    assert one.sweep is None and one.hyperparameters == {"epochs": 3, "lr": 0.1}
    assert config.hyperparameters == {"epochs": 3}  # the sweep's config is left as it was
    context = TrialContext(number=1, trials=1, values={"lr": 0.1})
    assert records_name(config, context) == f"unit-trial-{context.key}"
    assert records_name(config, None) == "unit"


# -- the config ---------------------------------------------------------------------------


def test_the_sweep_round_trips_through_json_as_prefect_stores_parameters(
    tmp_path: Path,
) -> None:
    section = {
        "parameters": {
            "lr": [0.01, 0.1],
            "epochs": {"min": 10, "max": 40, "steps": 2},
            "alpha": {"min": 0.5, "max": 2.0, "log": True, "steps": 2},
            "opt": ["sgd", True, 3],
        },
        "max_parallel": 2,
        "objective": "acc",
        "goal": "min",
    }
    config = load_config(write(tmp_path, sweep=section))
    again = validate_config(json.loads(json.dumps(config.model_dump(mode="json"))))
    assert again.sweep == config.sweep
    assert make_trials(again.sweep) == make_trials(config.sweep)  # type: ignore[arg-type]
    context = TrialContext(number=2, trials=8, values={"lr": 0.1, "opt": True}, sweep_run_id="x")
    assert TrialContext.model_validate_json(context.model_dump_json()) == context


def test_a_sweep_leaves_out_of_the_digest_so_old_configs_keep_theirs(tmp_path: Path) -> None:
    path = write(tmp_path)
    plain = load_config(path)
    swept = load_config(path, ["sweep={parameters: {lr: [0.1, 0.2]}, objective: acc, goal: max}"])
    assert config_digest(plain) == config_digest(swept)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"parameters": {"lr": [0.1]}, "objective": "f1", "goal": "max"}, "sweep.objective: 'f1'"),
        ({"parameters": {"lr": [0.1]}, "objective": "acc"}, "sweep.goal: is required"),
        ({"parameters": {"lr": [0.1]}, "objective": "acc", "goal": "up"}, "sweep.goal:"),
        (
            {"parameters": {"bad name": [1]}, "objective": "acc", "goal": "max"},
            "sweep.parameters.bad name: 'bad name' is not a valid --argument name",
        ),
        (
            {"parameters": {"api_key": ["a", "b"]}, "objective": "acc", "goal": "max"},
            "sweep.parameters.api_key: looks like a secret",
        ),
        (
            {
                "parameters": {"lr": {"min": 1, "max": 1, "steps": 2}},
                "objective": "acc",
                "goal": "max",
            },
            "sweep.parameters.lr: min (1) must be < max (1)",
        ),
        (
            {
                "parameters": {"lr": {"min": 0.0, "max": 1.0, "log": True}},
                "strategy": "random",
                "trials": 2,
                "objective": "acc",
                "goal": "max",
            },
            "sweep.parameters.lr: log: true needs min > 0",
        ),
        (
            {"parameters": {"lr": {"min": 0.1, "max": 1.0}}, "objective": "acc", "goal": "max"},
            "sweep.parameters.lr: strategy grid needs a list of values, or steps: N",
        ),
        (
            {"parameters": {"lr": [0.1]}, "strategy": "random", "objective": "acc", "goal": "max"},
            "sweep.trials: is required with strategy random",
        ),
        (
            {"parameters": {"lr": [0.1, 0.1]}, "objective": "acc", "goal": "max"},
            "sweep.parameters.lr: lists a value twice",
        ),
        (  # the script reads --lr 1 either way
            {"parameters": {"lr": [1, "1"]}, "objective": "acc", "goal": "max"},
            "sweep.parameters.lr: lists a value twice",
        ),
        (
            {"parameters": {"flag": [True, "True"]}, "objective": "acc", "goal": "max"},
            "sweep.parameters.flag: lists a value twice",
        ),
        (
            {"parameters": {"lr": []}, "objective": "acc", "goal": "max"},
            "sweep.parameters.lr: lists no values",
        ),
        (
            {"parameters": {"lr": [0.1, {"a": 1}]}, "objective": "acc", "goal": "max"},
            "sweep.parameters.lr[1]: must be a string, a number or true/false",
        ),
        (
            {
                "parameters": {"lr": {"min": 1, "max": 2, "step": 2}},
                "objective": "acc",
                "goal": "max",
            },
            "sweep.parameters.lr.step: unknown key",
        ),
        (
            {"parameters": {"lr": [0.1]}, "objective": "acc", "goal": "max", "max_parallel": 0},
            "sweep.max_parallel:",
        ),
        (
            {"parameters": {"lr": [0.1]}, "objective": "acc", "goal": "max", "trials": 1001},
            "sweep.trials:",
        ),
        (
            {
                "parameters": {"a": list(range(40)), "b": list(range(40))},
                "objective": "acc",
                "goal": "max",
            },
            "sweep.parameters: the grid has 1,600 combinations, more than 1,000",
        ),
        (
            {"parameters": {"lr": [0.1]}, "objective": "acc", "goal": "max", "tuner": "x"},
            "sweep.tuner: unknown key",
        ),
        (  # a bound no float holds: one line, not an OverflowError from the grid
            {
                "parameters": {"epochs": {"min": 1, "max": 10**400, "steps": 3}},
                "objective": "acc",
                "goal": "max",
            },
            "sweep.parameters.epochs: max is too large",
        ),
        (
            {
                "parameters": {"epochs": {"min": -(10**400), "max": 1}},
                "strategy": "random",
                "trials": 2,
                "objective": "acc",
                "goal": "max",
            },
            "sweep.parameters.epochs: min is too large",
        ),
    ],
)
def test_a_bad_sweep_is_one_line_naming_its_field(
    tmp_path: Path, section: dict[str, Any], expected: str
) -> None:
    found = problems(tmp_path, section)
    assert any(line.startswith(expected) for line in found), found


def test_a_bad_sweep_exits_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, sweep={"parameters": {"lr": [0.1]}, "objective": "f1", "goal": "max"})
    assert main(["run", str(path)]) == 2
    assert "invalid config: sweep.objective: 'f1' is not one of metrics" in capsys.readouterr().err


# -- plan ---------------------------------------------------------------------------------


def test_plan_shows_every_trial_with_its_own_checkpoints_and_jobs(
    digits_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = digits_config(
        sweep={
            "parameters": {"learning_rate": [0.01, 0.1], "batch_size": [32, 64, 128]},
            "max_parallel": 3,
            "objective": "val_accuracy",
            "goal": "max",
        }
    )
    assert main(["plan", str(path), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["sweep"]["trials"] == 6 and planned["sweep"]["max_parallel"] == 3
    trials = planned["trials"]
    assert [t["values"] for t in trials][:2] == [
        {"learning_rate": 0.01, "batch_size": 32},
        {"learning_rate": 0.01, "batch_size": 64},
    ]
    checkpoints = {t["checkpoint_uri"] for t in trials}
    jobs = {a["job_name"] for t in trials for a in t["attempts"]}
    assert len(checkpoints) == 6 and len(jobs) == 6 * 3
    fifth = trials[4]
    assert fifth["hyperparameters"]["learning_rate"] == 0.1
    assert fifth["attempts"][0]["job_name"] == "digits-sgd-<run>-t5-a1"
    command = fifth["attempts"][0]["request"]["command"]
    assert command[command.index("--batch_size") + 1] == "64"
    env = fifth["attempts"][0]["request"]["environment_variables"]
    assert env["SM_CHECKPOINT_DIR"] == fifth["checkpoint_uri"]
    assert "<trial-5-run-id>" in fifth["checkpoint_uri"]


def test_plan_on_aws_keeps_the_spot_flag_and_a_checkpoint_uri_per_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The SageMaker tuner drops managed spot (SDK issues #1011, #5584); a cloudtrain
    trial is a run of its own, so every CreateTrainingJob keeps it."""
    from cloudtrain.backends.aws.training_job import validate_request

    path = write(
        tmp_path,
        cloud="aws",
        data={"train": "s3://shared-bucket/train/"},
        compute={"instance_type": "ml.m5.large", "spot": True, "max_run": 100},
        retry={"max_attempts": 2},
        aws={"role": ROLE, "bucket": "my-bucket"},
        local=None,
        sweep={
            "parameters": {"lr": {"min": 0.001, "max": 0.1, "log": True}, "depth": [3, 5]},
            "strategy": "random",
            "trials": 4,
            "max_parallel": 2,
            "objective": "acc",
            "goal": "max",
        },
    )
    assert main(["plan", str(path), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    spot_requests = [t["attempts"][0]["request"] for t in planned["trials"]]
    assert len(spot_requests) == 4
    for trial, request in zip(planned["trials"], spot_requests, strict=True):
        validate_request(request)  # botocore's own validator
        assert request["EnableManagedSpotTraining"] is True
        assert request["CheckpointConfig"]["S3Uri"] == trial["checkpoint_uri"]
        assert request["HyperParameters"]["lr"] == json.dumps(trial["values"]["lr"])
        assert request["TrainingJobName"].endswith(f"-t{trial['trial']}-a1")
    uris = [request["CheckpointConfig"]["S3Uri"] for request in spot_requests]
    assert len(set(uris)) == 4
    assert all(uri.startswith("s3://my-bucket/cloudtrain/unit/checkpoints/") for uri in uris)
    fallbacks = [t["attempts"][1]["request"] for t in planned["trials"]]
    assert all(r["CheckpointConfig"]["S3Uri"] == u for r, u in zip(fallbacks, uris, strict=True))


# -- the ranking --------------------------------------------------------------------------


def summary(status: str, acc: Any = None, attempts: int = 1, cost: float | None = 0.5) -> Any:
    outcomes = ["interrupted"] * (attempts - 1) + [status if status != "skipped" else "x"]
    return {
        "status": status,
        "run_id": f"run-{status}-{acc}",
        "metrics": {} if acc is None else {"acc": acc},
        "attempts": [{"outcome": o} for o in outcomes],
        "cost_usd": cost,
        "model": {"model_archive": f"/m/{acc}.tar.gz"} if status == "succeeded" else None,
        "error": "the script exited 3" if status == "failed" else None,
    }


def report(tmp_path: Path, goal: str, summaries: list[Any]) -> SweepReport:
    values = [[round(0.1 * (n + 1), 2)] for n in range(len(summaries))]
    config = load_config(
        write(
            tmp_path,
            sweep={"parameters": {"lr": [v[0] for v in values]}, "objective": "acc", "goal": goal},
        )
    )
    trials = [Trial(n + 1, {"lr": v[0]}) for n, v in enumerate(values)]
    return SweepReport(config, trials, summaries, run_id="sweep-run")


def test_trials_rank_by_the_objective_failures_last_and_the_best_is_named(
    tmp_path: Path,
) -> None:
    result = report(
        tmp_path,
        "max",
        [
            summary("succeeded", 0.8, attempts=2),
            summary("failed"),
            summary("succeeded", 0.9),
            summary("over_budget", 0.99),  # stopped itself: not ranked by its value
            summary("succeeded", float("nan")),
            summary("skipped", 0.85),
        ],
    ).summary()
    assert result["status"] == "succeeded"
    assert [row["trial"] for row in result["trials"]] == [3, 6, 1, 5, 2, 4]
    assert [row["rank"] for row in result["trials"]] == [1, 2, 3, 4, 5, 6]
    best = result["best"]
    assert best["trial"] == 3 and best["objective"] == 0.9 and best["model"] == "/m/0.9.tar.gz"
    first = next(row for row in result["trials"] if row["trial"] == 1)
    assert (first["attempts"], first["reclaims"], first["cost_usd"]) == (2, 1, 0.5)
    skipped = next(row for row in result["trials"] if row["trial"] == 6)
    assert (skipped["attempts"], skipped["cost_usd"]) == (0, None)  # nothing spent now
    failed = next(row for row in result["trials"] if row["trial"] == 2)
    assert failed["error"] == "the script exited 3" and failed["objective"] is None
    assert result["sweep"]["succeeded"] == 4 and result["sweep"]["failed"] == 2
    assert result["cost_usd"] == 2.5  # the skipped trial spent nothing


@pytest.mark.parametrize("goal", ["max", "min"])
def test_an_infinite_objective_never_wins_the_sweep(tmp_path: Path, goal: str) -> None:
    """A diverged trial printing acc=inf (or -inf) has no objective, as NaN has none: it
    must not be named the best trial with its model."""
    result = report(
        tmp_path,
        goal,
        [
            summary("succeeded", 0.8),
            summary("succeeded", float("inf")),
            summary("succeeded", float("-inf")),
        ],
    ).summary()
    assert result["best"]["trial"] == 1
    assert [row["trial"] for row in result["trials"]] == [1, 2, 3]
    assert [row["objective"] for row in result["trials"]] == [0.8, None, None]


def test_goal_min_ranks_the_lowest_first(tmp_path: Path) -> None:
    rows = ranked(
        [
            {"trial": 1, "status": "succeeded", "objective": 0.3},
            {"trial": 2, "status": "succeeded", "objective": 0.1},
            {"trial": 3, "status": "succeeded", "objective": 0.1},
        ],
        "min",
    )
    assert [row["trial"] for row in rows] == [2, 3, 1]


def test_a_sweep_fails_only_when_every_trial_did(tmp_path: Path) -> None:
    failed = report(tmp_path, "max", [summary("failed"), summary("no_progress")])
    assert failed.status == "failed" and failed.best() is None
    assert failed.summary()["error"] == "every trial of the sweep failed (2 of 2)"
    assert failed.outcome()["status"] == "failed"
    one = report(tmp_path, "max", [summary("failed"), summary("succeeded", 0.5)])
    assert one.status == "succeeded" and one.outcome()["best_trial"] == 2


def test_the_markdown_ranks_the_trials_and_names_the_best_model(tmp_path: Path) -> None:
    text = report(
        tmp_path, "max", [summary("succeeded", 0.7), summary("failed"), summary("succeeded", 0.9)]
    ).markdown()
    assert text.startswith("# unit on local: sweep succeeded")
    assert "| rank | trial | lr | status | acc | attempts | reclaims | cost | run |" in text
    assert "| 1 | 3 | `0.3` | succeeded | 0.9 |" in text
    assert "- model: `/m/0.9.tar.gz`" in text
    assert "- trial 2 (failed): the script exited 3" in text


def test_plan_on_azure_gives_each_trial_its_own_checkpoints_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        cloud="azure",
        compute={"instance_type": "Standard_DS3_v2", "spot": True, "max_run": 5400},
        azure={
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg",
            "workspace": "ws",
            "compute": "cpu-cluster",
        },
        local=None,
        sweep={"parameters": {"epochs": [3, 5]}, "objective": "acc", "goal": "max"},
    )
    assert main(["plan", str(path), "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)["trials"]
    outputs = []
    for trial in trials:
        job = trial["attempts"][0]["request"]  # azure-ai-ml's own REST body
        checkpoints = job["properties"]["outputs"]["checkpoints"]
        assert checkpoints["uri"] == trial["checkpoint_uri"]
        assert job["properties"]["tags"]["cloudtrain:capacity"] == "low-priority"
        assert f"--epochs {trial['values']['epochs']}" in job["properties"]["command"]
        assert job["name"].endswith(f"-t{trial['trial']}-a1")
        outputs.append(checkpoints["uri"])
    assert len(set(outputs)) == 2


def test_a_swept_value_over_sagemakers_limit_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hyperparameters are checked against CreateTrainingJob's limits offline; a swept
    value is a hyperparameter of its trial's jobs, so it is checked too (else the job is
    refused by SageMaker after the data upload, in every trial)."""
    path = write(
        tmp_path,
        cloud="aws",
        data={"train": "s3://shared-bucket/train/"},
        compute={"instance_type": "ml.m5.large", "max_run": 100},
        aws={"role": ROLE, "bucket": "my-bucket"},
        local=None,
        sweep={"parameters": {"note": ["short", "x" * 3000]}, "objective": "acc", "goal": "max"},
    )
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "invalid config: sweep.parameters.note: is 3,002 characters in HyperParameters" in err


def test_an_aws_sweep_plan_reads_botocores_sagemaker_model_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each trial's requests are checked and validated offline against botocore's model;
    reading its JSON per request (~0.1 s) made a 1,000-trial plan take over 5 minutes."""
    import botocore.loaders

    from cloudtrain.backends.aws.limits import sagemaker_model

    loads: list[str] = []
    real = botocore.loaders.Loader.load_service_model

    def counted(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        loads.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(botocore.loaders.Loader, "load_service_model", counted)
    sagemaker_model.cache_clear()  # read here, whatever ran before
    path = write(
        tmp_path,
        cloud="aws",
        data={"train": "s3://shared-bucket/train/"},
        compute={"instance_type": "ml.m5.large", "max_run": 100},
        aws={"role": ROLE, "bucket": "my-bucket"},
        local=None,
        sweep={
            "parameters": {"lr": {"min": 0.001, "max": 0.1, "steps": 20}},
            "objective": "acc",
            "goal": "max",
        },
    )
    assert main(["plan", str(path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["trials"]) == 20
    assert loads.count("sagemaker") == 1
