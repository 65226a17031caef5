"""``input_modes`` on SageMaker: each channel's ``InputMode`` and what may ask for which.

download is ``File`` (the channel is copied to the instance before the script starts),
fastfile and mount are both ``FastFile`` (the S3 prefix is presented as files and read as
the script reads it; SageMaker has no other mount for training channels), pipe is ``Pipe``
(a FIFO per channel and epoch, ``/opt/ml/input/data/<channel>_<epoch>``).

Pipe is accepted only where something will read the FIFO: the built-in algorithms that
AWS documents as taking Pipe, and bring-your-own images (the user's script must read the
FIFO). Framework images run a script that reads ``SM_CHANNEL_<NAME>`` as a folder, which
Pipe does not provide, so pipe is refused with them. Pure: no network.
"""

from __future__ import annotations

from cloudtrain.config import PipelineConfig
from cloudtrain.errors import Problems, UnsupportedError

#: The request's InputMode for each of cloudtrain's modes.
SAGEMAKER_MODES: dict[str, str] = {
    "download": "File",
    "fastfile": "FastFile",
    "mount": "FastFile",
    "pipe": "Pipe",
}

#: Built-in algorithms (``image_uris`` names) whose "Training input mode" is "File or Pipe"
#: in the SageMaker developer guide, "Common parameters for built-in algorithms"
#: (docs.aws.amazon.com/sagemaker/latest/dg/common-info-all-im-models.html; the same
#: table is doc_source/sagemaker-algo-docker-registry-paths.md in
#: awsdocs/amazon-sagemaker-developer-guide). forecasting-deepar, ipinsights, object2vec
#: and seq2seq are "File" there. No SDK or botocore model carries this per built-in:
#: SupportedTrainingInputModes exists only for Marketplace algorithms (DescribeAlgorithm).
PIPE_ALGORITHMS: frozenset[str] = frozenset(
    {
        "blazingtext",
        "factorization-machines",
        "image-classification",
        "kmeans",
        "knn",
        "lda",
        "linear-learner",
        "ntm",
        "object-detection",
        "pca",
        "randomcutforest",
        "semantic-segmentation",
        "xgboost",
    }
)
#: The xgboost versions that table lists with Pipe; others are not documented either way.
PIPE_XGBOOST_VERSIONS: frozenset[str] = frozenset({"0.90-1", "0.90-2", "1.0-1", "1.2-1", "1.2-2"})


def channel_input_mode(config: PipelineConfig, channel: str) -> str | None:
    """The channel's ``InputMode``, or None to leave it to the job's ``File``."""
    mode = config.input_mode(channel)
    return SAGEMAKER_MODES[mode] if mode else None


def check_input_modes(
    config: PipelineConfig, image_kind: str, name: str, version: str | None
) -> None:
    """Refuse pipe where nothing would read the FIFO; ``name`` and ``version`` are the
    resolved image's (a built-in's algorithm and version)."""
    problems = Problems()
    for channel, mode in config.input_modes.items():
        if mode != "pipe":
            continue
        field = f"input_modes.{channel}"
        if image_kind == "framework":
            problems.add(
                UnsupportedError(
                    field,
                    "pipe streams the channel through a FIFO that a framework image's "
                    "script does not read (it reads SM_CHANNEL_* as a folder); use fastfile, "
                    "a built-in algorithm that accepts Pipe, or your own environment.image "
                    "whose script reads the FIFO",
                )
            )
        elif image_kind == "builtin" and name not in PIPE_ALGORITHMS:
            problems.add(
                UnsupportedError(
                    field,
                    f"the built-in algorithm {name} takes File input only (SageMaker's "
                    "table of built-in algorithms); use download or fastfile",
                )
            )
        elif image_kind == "builtin" and name == "xgboost" and version not in PIPE_XGBOOST_VERSIONS:
            problems.add(
                UnsupportedError(
                    field,
                    f"SageMaker documents Pipe for xgboost "
                    f"{', '.join(sorted(PIPE_XGBOOST_VERSIONS))}, not {version}; pin one of "
                    "them (environment.builtin: xgboost:1.2-1) or use fastfile",
                )
            )
    problems.raise_if_any()
