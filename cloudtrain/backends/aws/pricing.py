"""What a SageMaker training job cost, and what managed spot saved, in dollars.

SageMaker reports ``TrainingTimeInSeconds`` and ``BillableTimeInSeconds`` per instance;
with managed spot the billable time is shorter, and AWS states the saving as
``(1 - billable / training) * 100`` percent. Turning that into dollars needs the
on-demand price, which no offline API gives, hence the dated table below.

Provenance, plainly: the table was written from memory of the public "Amazon SageMaker
pricing" page (Training, On-Demand, US East (N. Virginia)) as it stood around
``PRICES_AS_OF``; it was not fetched (this machine has no network) and was not checked
against AWS's Price List API. Prices differ by region and change over time, so treat
every dollar figure as an estimate and re-check the table before relying on it. The
percentage saving does not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: The month the table describes (approximate; see the module docstring).
PRICES_AS_OF = "2024-06"

#: USD per instance-hour, SageMaker Training on-demand, us-east-1, as of PRICES_AS_OF.
ON_DEMAND_USD_PER_HOUR: Mapping[str, float] = MappingProxyType(
    {
        # General purpose
        "ml.m5.large": 0.115,
        "ml.m5.xlarge": 0.23,
        "ml.m5.2xlarge": 0.461,
        "ml.m5.4xlarge": 0.922,
        "ml.m5.12xlarge": 2.765,
        "ml.m5.24xlarge": 5.53,
        # Compute optimized
        "ml.c5.xlarge": 0.204,
        "ml.c5.2xlarge": 0.408,
        "ml.c5.4xlarge": 0.816,
        "ml.c5.9xlarge": 1.836,
        "ml.c5.18xlarge": 3.672,
        # NVIDIA V100
        "ml.p3.2xlarge": 3.825,
        "ml.p3.8xlarge": 14.688,
        "ml.p3.16xlarge": 28.152,
        # NVIDIA T4
        "ml.g4dn.xlarge": 0.736,
        "ml.g4dn.2xlarge": 0.94,
        "ml.g4dn.4xlarge": 1.505,
        "ml.g4dn.8xlarge": 2.72,
        "ml.g4dn.12xlarge": 4.89,
        "ml.g4dn.16xlarge": 5.44,
        # NVIDIA A10G (16xlarge has one GPU, 12xlarge four: hence the order)
        "ml.g5.xlarge": 1.408,
        "ml.g5.2xlarge": 1.515,
        "ml.g5.4xlarge": 2.03,
        "ml.g5.8xlarge": 3.06,
        "ml.g5.12xlarge": 7.09,
        "ml.g5.16xlarge": 5.12,
        "ml.g5.24xlarge": 10.18,
        "ml.g5.48xlarge": 20.36,
    }
)

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class CostEstimate:
    """One job's cost: on-demand for its training time, against what was billed."""

    instance_type: str
    instance_count: int
    training_seconds: float
    billable_seconds: float
    on_demand_usd: float
    billed_usd: float
    saved_usd: float
    saved_percent: float
    prices_as_of: str


def estimate_cost(
    instance_type: str, instance_count: int, training_seconds: float, billable_seconds: float
) -> CostEstimate | None:
    """Dollars for a finished job; None for an instance type the table does not price.

    Both times are per instance, as DescribeTrainingJob reports them, so each is
    multiplied by ``instance_count``. Billable time below training time is what managed
    spot saved; without spot the two are equal and the saving is zero.
    """
    if instance_count < 1:
        raise ValueError(f"instance_count must be >= 1 (got {instance_count})")
    if training_seconds < 0 or billable_seconds < 0:
        raise ValueError("training and billable seconds must be >= 0")
    price = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    if price is None:
        return None
    rate = price * instance_count / SECONDS_PER_HOUR
    on_demand = rate * training_seconds
    billed = rate * billable_seconds
    saved_percent = (1 - billable_seconds / training_seconds) * 100 if training_seconds else 0.0
    return CostEstimate(
        instance_type=instance_type,
        instance_count=instance_count,
        training_seconds=training_seconds,
        billable_seconds=billable_seconds,
        on_demand_usd=on_demand,
        billed_usd=billed,
        saved_usd=on_demand - billed,
        saved_percent=saved_percent,
        prices_as_of=PRICES_AS_OF,
    )
