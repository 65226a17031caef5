"""Prefect flows, one per cloud; each composes the stage tasks in ``flows.pipeline``."""
