"""The fake cloud's backend: every stage of the protocol, in memory, offline."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudtrain.backend import LogSink, StagePlan
from cloudtrain.backoff import Backoff
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import ConfigError, UnsupportedError
from cloudtrain.recovery import Outcome
from cloudtrain.results import (
    AttemptSpec,
    AttemptStatus,
    ChannelData,
    ComputeTarget,
    ModelArtifacts,
    ResolvedEnvironment,
    TrainingResult,
)
from cloudtrain.store import manifest_json, sha256_file, walk_files
from fake_backend.settings import FakeSettings


class FakeBackend:
    name = "fake"
    settings = FakeSettings
    description = "Train nowhere: a cloud in memory, for tests."
    built = 0  # instances made, so a test can see a run build one backend

    def __init__(self, config: PipelineConfig) -> None:
        FakeBackend.built += 1
        self.poll = Backoff(0.0, 0.0, jitter=0.0)
        self.jobs: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: PipelineConfig) -> FakeBackend:
        return cls(config)

    def _settings(self, config: PipelineConfig) -> FakeSettings:
        return config.section("fake", FakeSettings) or FakeSettings()

    def validate(self, config: PipelineConfig) -> None:
        if config.environment.kind != "framework":
            raise UnsupportedError(f"environment.{config.environment.kind}", "fake runs frameworks")

    def plan_stages(self, config: PipelineConfig) -> StagePlan:
        region = self._settings(config).region
        return StagePlan(
            channels={name: f"fake://{region}/{name}/<digest>" for name in config.data},
            compute=self._compute(config),
            environment=ResolvedEnvironment("framework", "fake:python", "memory"),
            requests={"region": region},
        )

    def attempt_request(self, config: PipelineConfig, spec: AttemptSpec) -> dict[str, Any]:
        return {
            "job": spec.job_name,
            "spot": spec.spot,
            "checkpoints": spec.checkpoint_uri,
            "inputs": dict(spec.channels),
        }

    def checkpoint_location(self, config: PipelineConfig, run_id: str) -> str:
        return f"fake://{self._settings(config).region}/checkpoints/{run_id}/"

    def upload_channel(
        self, config: PipelineConfig, channel: str, source: Path | Any, log: LogSink
    ) -> ChannelData:
        if not isinstance(source, Path):
            raise ConfigError(f"data.{channel}", "fake takes files only")
        entries = {
            relative: {"sha256": sha256_file(path), "size": path.stat().st_size}
            for relative, path in walk_files(source)
        }
        digest = hashlib.sha256(manifest_json(entries).encode()).hexdigest()
        log(f"{channel}: {len(entries)} files into memory")
        return ChannelData(
            channel=channel,
            uri=f"fake://{self._settings(config).region}/{channel}/{digest}",
            digest=digest,
            files=len(entries),
            bytes=sum(int(e["size"]) for e in entries.values()),
            copied_files=len(entries),
            source=str(source),
        )

    def use_data_uri(self, config: PipelineConfig, channel: str, uri: str) -> ChannelData:
        raise UnsupportedError(f"data.{channel}", "fake reads files only")

    def ensure_compute(self, config: PipelineConfig) -> ComputeTarget:
        return self._compute(config)

    def _compute(self, config: PipelineConfig) -> ComputeTarget:
        return ComputeTarget(
            "memory",
            config.compute.instance_type,
            config.compute.instance_count,
            warnings=("memory is not a real machine",),
        )

    def resolve_environment(
        self, config: PipelineConfig, compute: ComputeTarget
    ) -> ResolvedEnvironment:
        return ResolvedEnvironment("framework", "fake:python", "memory")

    def submit_attempt(self, config: PipelineConfig, spec: AttemptSpec) -> str:
        reclaimed = spec.spot and spec.number <= self._settings(config).reclaims
        self.jobs[spec.job_name] = {
            "request": self.attempt_request(config, spec),
            "outcome": Outcome.INTERRUPTED if reclaimed else Outcome.SUCCEEDED,
            "started": datetime.now(UTC),
        }
        return spec.job_name

    def describe_attempt(self, handle: str) -> AttemptStatus:
        job = self.jobs[handle]
        succeeded = job["outcome"] is Outcome.SUCCEEDED
        return AttemptStatus(
            outcome=job["outcome"],
            reason="finished" if succeeded else "reclaimed by the fake",
            metrics={"acc": 0.5} if succeeded else {},
            started_at=job["started"],
            ended_at=datetime.now(UTC),
        )

    def read_logs(self, handle: str) -> list[str]:
        return [f"{handle}: ran in memory"]

    def stop_attempt(self, handle: str) -> None:
        self.jobs[handle]["outcome"] = Outcome.STOPPED

    def collect_artifacts(self, config: PipelineConfig, result: TrainingResult) -> ModelArtifacts:
        model_dir = config.work_dir / "runs" / config.name / result.run_id / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "model.txt").write_text("fake model\n")
        return ModelArtifacts(
            model_uri=f"fake://{self._settings(config).region}/models/{result.run_id}",
            model_archive=None,
            local_model_dir=model_dir,
            metrics=result.metrics,
        )
