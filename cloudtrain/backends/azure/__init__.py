"""The Azure ML backend (azure-ai-ml's MLClient and azure-storage-blob)."""
