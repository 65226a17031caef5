"""``compute.distribution`` on SageMaker: the training toolkit's launch hyperparameters.

Why these and not the SDK v3 way (``ModelTrainer(distributed=Torchrun()/MPI())``): our
job runs the script through the framework container's own training toolkit
(``sagemaker_program`` and ``sagemaker_submit_directory``, script mode), and the toolkit
(aws/sagemaker-training-toolkit ``runner.py``, the PyTorch toolkit's ``training.py``)
launches a distributed job from the hyperparameters ``sagemaker_torch_distributed_enabled``
(torchrun on every host: ``--nnodes``, ``--nproc_per_node``, ``--master_addr algo-1
--master_port 7777 --node_rank``) and ``sagemaker_mpi_enabled`` (mpirun from algo-1),
with ``sagemaker_mpi_num_of_processes_per_host`` as the processes per host for both, as
the v2 SDK's estimators set them. SDK v3 instead uploads its own driver scripts as an
extra ``sm_drivers`` channel and replaces the container's entry point with a shell
script, bypassing the toolkit: a second way for one script to start, SDK-private code
in every job, and a channel counted against SageMaker's 20. The request stays one dict
that ``plan`` prints and botocore validates, as for every other field.

What the containers cannot do is refused here, naming the field: built-in algorithms
distribute themselves; the scikit-learn and XGBoost containers run the script once per
host and have no torchrun or MPI launcher; torchrun needs the PyTorch container (the
toolkit's torch_distributed runner, in PyTorch 1.13 and later images, as the v2 SDK
required); MPI needs PyTorch, TensorFlow (Horovod) or Hugging Face. A bring-your-own
image gets the same hyperparameters: an image built on the training toolkit (an extended
Deep Learning Container) honours them, any other must start its ranks itself.
"""

from __future__ import annotations

import json

from cloudtrain.backends.aws.images import version_numbers
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import UnsupportedError

TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
MPI_ENABLED = "sagemaker_mpi_enabled"
PROCESSES_PER_HOST = "sagemaker_mpi_num_of_processes_per_host"
MPI_CUSTOM_OPTIONS = "sagemaker_mpi_custom_mpi_options"
#: The request's hyperparameters a distribution adds (for messages naming the field).
ADDED = (TORCH_DISTRIBUTED, MPI_ENABLED, PROCESSES_PER_HOST, MPI_CUSTOM_OPTIONS)

#: The frameworks whose SageMaker containers launch each type.
FRAMEWORKS_FOR = {"torchrun": ("pytorch",), "mpi": ("pytorch", "tensorflow", "huggingface")}
#: The first PyTorch container with the toolkit's torch_distributed runner.
TORCHRUN_MIN_PYTORCH = (1, 13)


def check_distribution(config: PipelineConfig) -> None:
    """Refuse a distribution the chosen container cannot launch; pure."""
    kind = config.compute.distribution.type
    if kind == "none":
        return
    environment = config.environment
    if environment.kind == "builtin":
        raise UnsupportedError(
            "compute.distribution.type",
            f"{kind}: a built-in algorithm ({environment.builtin}) distributes itself over "
            "compute.instance_count hosts and runs no script to launch; use type none",
        )
    framework = environment.framework
    if environment.kind != "framework" or framework is None:
        return  # an image: the toolkit's hyperparameters, honoured if it runs the toolkit
    if framework not in FRAMEWORKS_FOR[kind]:
        frameworks = " or ".join(FRAMEWORKS_FOR[kind])
        raise UnsupportedError(
            "compute.distribution.type",
            f"{kind} on SageMaker needs environment.framework {frameworks}: the {framework} "
            "container runs the script once per host and has no "
            f"{'torchrun' if kind == 'torchrun' else 'MPI'} launcher",
        )
    version = version_numbers(environment.framework_version or "")[:2]
    if kind == "torchrun" and len(version) == 2 and version < TORCHRUN_MIN_PYTORCH:
        raise UnsupportedError(
            "environment.framework_version",
            f"torchrun on SageMaker needs a PyTorch {'.'.join(map(str, TORCHRUN_MIN_PYTORCH))} "
            f"or later container (got {environment.framework_version})",
        )


def distribution_hyperparameters(config: PipelineConfig) -> dict[str, str]:
    """The toolkit's launch switches, JSON-encoded as the framework containers read them."""
    distribution = config.compute.distribution
    if distribution.type == "none":
        return {}
    values: dict[str, object] = {PROCESSES_PER_HOST: distribution.processes_per_host}
    if distribution.type == "torchrun":
        values[TORCH_DISTRIBUTED] = True
    else:
        values[MPI_ENABLED] = True
        values[MPI_CUSTOM_OPTIONS] = ""
    return {name: json.dumps(value) for name, value in values.items()}
