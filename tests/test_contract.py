"""The script contract as the script itself sees it, on the local backend."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import train_locally

from cloudtrain.contract import MetricParser, hyperparameter_args, metric_regex

DUMP_SCRIPT = """
    import json, os, sys
    from pathlib import Path
    listing = {}
    for name in json.loads(os.environ["SM_CHANNELS"]):
        folder = Path(os.environ["SM_CHANNEL_" + name.upper()])
        listing[name] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    seen = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("SM_", "CLOUDTRAIN_"))},
        "listing": listing,
        "dirs_exist": all(Path(os.environ[k]).is_dir() for k in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_CHECKPOINT_DIR")),
    }
    Path(os.environ["SM_MODEL_DIR"], "seen.json").write_text(json.dumps(seen))
    print("accuracy=0.5"); print("accuracy=0.75 loss=1e-3")
"""


def test_script_sees_the_contract(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    (tmp_path / "data" / "images" / "a").mkdir(parents=True)
    (tmp_path / "data" / "images" / "a" / "1.txt").write_text("one")
    (tmp_path / "data" / "images" / "2.txt").write_text("two")
    (tmp_path / "data" / "labels.csv").write_text("y\n1\n")
    path = write_config(
        DUMP_SCRIPT,
        hyperparameters={"epochs": 3, "learning_rate": 0.05, "optimizer": "adam", "nesterov": True},
        data={"train": "data/images", "labels": "data/labels.csv"},
        metrics=["accuracy", "loss"],
    )
    backend, result, _ = train_locally(path)
    assert result.succeeded
    attempt = result.attempts[0]
    seen = json.loads(
        (
            backend.root
            / "runs"
            / "unit"
            / result.run_id
            / "attempts"
            / "1"
            / "model"
            / "seen.json"
        ).read_text()
    )
    env = seen["env"]

    assert seen["argv"] == [
        "--epochs",
        "3",
        "--learning_rate",
        "0.05",
        "--optimizer",
        "adam",
        "--nesterov",
        "True",
    ]
    assert seen["cwd"] == str(tmp_path / "src")
    assert json.loads(env["SM_HPS"]) == {
        "epochs": 3,
        "learning_rate": 0.05,
        "optimizer": "adam",
        "nesterov": True,
    }
    assert env["SM_HP_LEARNING_RATE"] == "0.05"
    assert json.loads(env["SM_CHANNELS"]) == ["labels", "train"]
    assert seen["listing"] == {"train": ["2.txt", "a/1.txt"], "labels": ["labels.csv"]}
    assert env["SM_CHECKPOINT_DIR"] == result.checkpoint_uri
    assert env["SM_MODEL_DIR"].endswith("/attempts/1/model")
    assert env["SM_OUTPUT_DATA_DIR"].endswith("/attempts/1/output/data")
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "ml.m5.large"
    assert env["CLOUDTRAIN_ATTEMPT"] == "1" and env["CLOUDTRAIN_SPOT"] == "false"
    assert env["SM_TRAINING_JOB_NAME"] == attempt.job_name == "unit-01234567-a1"
    assert seen["dirs_exist"]
    assert attempt.metrics == {"accuracy": 0.75, "loss": 0.001}


def test_hyperparameters_render_as_sagemaker_does() -> None:
    assert hyperparameter_args({"a": 1, "b": 0.5, "c": "x y", "d": False}) == [
        "--a",
        "1",
        "--b",
        "0.5",
        "--c",
        "x y",
        "--d",
        "False",
    ]


def test_metric_parser_matches_only_the_declared_names() -> None:
    parser = MetricParser(["val_accuracy", "loss"])
    assert parser.feed("epoch=1 val_accuracy=0.91 loss=2.5e-1") == {
        "val_accuracy": 0.91,
        "loss": 0.25,
    }
    assert parser.feed("xval_accuracy=0.1 train.loss=9 my-loss=7") == {}
    assert parser.feed("loss=-1.5") == {"loss": -1.5}
    assert parser.series == {"val_accuracy": [0.91], "loss": [0.25, -1.5]}
    assert parser.final == {"val_accuracy": 0.91, "loss": -1.5}


def test_metric_regex_is_a_valid_sagemaker_style_pattern() -> None:
    import re

    match = re.search(metric_regex("val_accuracy"), "[1] val_accuracy=0.875;")
    assert match and match.group(1) == "0.875"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 1e-3),
        ("-0.5", -0.5),
        ("+2", 2.0),
        ("1.", 1.0),
        (".5", 0.5),
        ("7", 7.0),
        ("2.5E+2", 250.0),
        ("0.875;", 0.875),  # a separator after the value
        ("0.9, acc=1", 0.9),
        ("0.9,acc=1", 0.9),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("Infinity", math.inf),
        ("1.2.3", None),  # not 1.2
        ("1,5", None),  # a decimal comma: not 1
        ("12abc", None),  # not 12
        ("95%", None),  # not 95
        ("1e", None),
        ("0.5-1", None),
        ("info", None),
        ("", None),
    ],
)
def test_a_metric_value_is_the_whole_token(text: str, value: float | None) -> None:
    parser = MetricParser(["x"])
    found = parser.feed(f"step=3 x={text}")
    assert found == ({} if value is None else {"x": value})
    assert bool(re.search(metric_regex("x"), f"x={text}")) is (value is not None)


def test_nan_is_a_metric_value() -> None:
    found = MetricParser(["loss"]).feed("loss=nan")
    assert math.isnan(found["loss"])
    assert MetricParser(["loss"]).feed("loss=nanny") == {}
