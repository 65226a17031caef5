"""The report and the summary (``--json``) show what each stage produced, warnings too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cloudtrain.config import load_config
from cloudtrain.report import RunReport
from cloudtrain.results import ComputeTarget, ResolvedEnvironment

DRIFT = "compute cpu-cluster: vm size Standard_DS2_v2 differs from Standard_DS3_v2"


def test_compute_warnings_are_typed_and_shown_like_environment_warnings(
    write_config: Callable[..., Path],
) -> None:
    run = RunReport(load_config(write_config()))
    run.compute = ComputeTarget(
        "cpu-cluster", "Standard_DS2_v2", 1, {"action": "unchanged"}, (DRIFT,)
    )
    run.environment = ResolvedEnvironment(
        "curated", "azureml:x@latest", "curated x", ("old image",)
    )

    summary = run.summary()
    assert summary["compute"]["warnings"] == [DRIFT]
    assert summary["compute"]["details"] == {"action": "unchanged"}  # not buried in details
    assert summary["environment"]["warnings"] == ["old image"]
    markdown = run.markdown()
    assert f"> warning: {DRIFT}" in markdown
    assert "> warning: old image" in markdown
    assert markdown.index("Compute: cpu-cluster") < markdown.index(f"> warning: {DRIFT}")
