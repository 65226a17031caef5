"""Every JSON document cloudtrain writes is strict JSON, also when a metric is NaN or inf."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli import cli

from cloudtrain import jsonout


def strict_loads(text: str) -> Any:
    """What jq or JavaScript's JSON.parse accept: no NaN, Infinity or -Infinity."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_are_written_as_strings_float_reads_back() -> None:
    value = {
        "loss": math.nan,
        "nested": [math.inf, (-math.inf, 1.5)],
        "ok": 0.25,
        "path": Path("/tmp/x"),
    }
    text = jsonout.dumps(value, indent=2)
    assert strict_loads(text) == {
        "loss": "NaN",
        "nested": ["Infinity", ["-Infinity", 1.5]],
        "ok": 0.25,
        "path": "/tmp/x",
    }
    assert math.isnan(float("NaN")) and float("Infinity") == math.inf
    with pytest.raises(ValueError):  # what json.dumps alone writes is refused
        strict_loads(json.dumps(value, default=str))


SCRIPT = """
    import os, sys
    print("loss=nan best=inf worst=-inf acc=0.5")
    open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("m")
"""


@pytest.mark.prefect
def test_every_json_a_run_writes_is_strict(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_config(SCRIPT, metrics=["loss", "best", "worst", "acc"])
    done = cli("run", str(path), "--json", api_url=prefect_server)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = strict_loads(done.stdout)
    expected = {"loss": "NaN", "best": "Infinity", "worst": "-Infinity", "acc": 0.5}
    assert summary["metrics"] == expected
    run_dir = tmp_path / ".cloudtrain" / "runs" / "unit" / summary["run_id"]
    assert strict_loads((run_dir / "metrics.json").read_text()) == expected
    attempts = strict_loads((run_dir / "attempts.json").read_text())
    assert attempts["attempts"][0]["metrics"] == expected
    record = strict_loads((tmp_path / ".cloudtrain" / "records" / "unit-local.json").read_text())
    assert record["summary"]["metrics"] == expected

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:  # the attempts table keeps the values too
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["unit-attempts"]))
        )
    rows = [row for artifact in artifacts for row in strict_loads(str(artifact.data))]
    assert any(row.get("metric best") == "Infinity" for row in rows), rows

    again = cli("run", str(path), "--json", api_url=prefect_server)  # reuses that record
    assert again.returncode == 0, again.stderr[-3000:]
    reused = strict_loads(again.stdout)
    assert reused["status"] == "skipped" and reused["metrics"] == expected
