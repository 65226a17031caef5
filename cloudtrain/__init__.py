"""cloudtrain: one training script on SageMaker, Azure ML or this machine, as a Prefect pipeline.

The public face is re-exported here; nothing heavy (Prefect, cloud SDKs) is imported by
it. The flows live in ``flows/`` and the Prefect tasks in ``tasks/``.
"""

from __future__ import annotations

from cloudtrain.backend import Backend, StagePlan, build_backend, use_backend
from cloudtrain.backends import cloud_names, register
from cloudtrain.config import (
    PipelineConfig,
    Section,
    TrackingConfig,
    load_config,
    validate_config,
)
from cloudtrain.errors import (
    BackendError,
    CloudtrainError,
    ConfigError,
    Problem,
    TrainingError,
    TransientError,
    UnsupportedError,
)
from cloudtrain.planning import plan
from cloudtrain.recovery import Outcome, RecoveryStrategy
from cloudtrain.results import (
    AttemptRecord,
    AttemptSpec,
    AttemptStatus,
    ChannelData,
    ComputeTarget,
    ModelArtifacts,
    ResolvedEnvironment,
    TrainingResult,
)
from cloudtrain.training import run_training

__version__ = "0.1.0"

__all__ = [
    "AttemptRecord",
    "AttemptSpec",
    "AttemptStatus",
    "Backend",
    "BackendError",
    "ChannelData",
    "CloudtrainError",
    "ComputeTarget",
    "ConfigError",
    "ModelArtifacts",
    "Outcome",
    "PipelineConfig",
    "Problem",
    "RecoveryStrategy",
    "ResolvedEnvironment",
    "Section",
    "StagePlan",
    "TrackingConfig",
    "TrainingError",
    "TrainingResult",
    "TransientError",
    "UnsupportedError",
    "__version__",
    "build_backend",
    "cloud_names",
    "load_config",
    "plan",
    "register",
    "run_training",
    "use_backend",
    "validate_config",
]
