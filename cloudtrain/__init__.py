"""cloudtrain: one training script on SageMaker, Azure ML or this machine, as a Prefect pipeline.

The public face is re-exported here; nothing heavy (Prefect, cloud SDKs) is imported by
it. The flows live in ``flows/`` and the Prefect tasks in ``tasks/``.
"""

from __future__ import annotations

from cloudtrain.backend import Backend
from cloudtrain.backends import get_backend
from cloudtrain.config import PipelineConfig, load_config, validate_config
from cloudtrain.errors import (
    BackendError,
    CloudtrainError,
    ConfigError,
    TrainingError,
    TransientError,
    UnsupportedError,
)
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
    "RecoveryStrategy",
    "ResolvedEnvironment",
    "TrainingError",
    "TrainingResult",
    "TransientError",
    "UnsupportedError",
    "__version__",
    "get_backend",
    "load_config",
    "run_training",
    "validate_config",
]
