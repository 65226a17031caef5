"""The AWS pipeline: S3 upload, SageMaker managed spot training resumed from checkpoints.

The flow itself is made in ``flows.pipeline``; this file gives it a stable entrypoint
for deployments (``flows/aws_training.py:aws_training``).
"""

from flows.pipeline import training_flow

aws_training = training_flow("aws")
