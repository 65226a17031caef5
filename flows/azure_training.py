"""The Azure ML pipeline: datastore upload, low-priority command jobs resumed from checkpoints.

The flow itself is made in ``flows.pipeline``; this file gives it a stable entrypoint
for deployments (``flows/azure_training.py:azure_training``).
"""

from flows.pipeline import training_flow

azure_training = training_flow("azure")
