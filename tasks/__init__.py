"""Prefect tasks, one module per pipeline stage; each is thin over the Backend protocol."""
