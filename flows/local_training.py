"""The local pipeline: every stage on this machine, no cloud account needed.

The flow itself is made in ``flows.pipeline``; this file gives it a stable entrypoint
for deployments (``flows/local_training.py:local_training``).
"""

from flows.pipeline import training_flow

local_training = training_flow("local")
