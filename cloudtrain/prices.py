"""USD per hour for an instance type on spot or on-demand, whatever the cloud runs it.

One lookup over the dated tables the clouds' cost reports already use, so that a budget
(``cloudtrain.budget``) prices an attempt the same way on every cloud:

- SageMaker ``ml.*`` types: on-demand from ``cloudtrain.backends.aws.pricing``. AWS has
  no price table for managed spot: it bills spot as a shorter ``BillableTimeInSeconds``
  at the on-demand price, and the saving depends on the spot market of the moment. Before
  a job has run, a spot hour is therefore *assumed* to cost ``MANAGED_SPOT_FRACTION`` of an
  on-demand one (see there);
- Azure VM sizes (any case): dedicated and low priority from
  ``cloudtrain.backends.azure.pricing`` (low priority there is itself derived, an 80 %
  discount).

A type is looked up by its name, not by the cloud that runs it: the local backend pays
nothing, but prices its attempts as the instance type it names would cost (``ml.m5.large``
by default), so a budget and a deadline can be tried out on this machine before paying.
An unknown type has no price (None); a config with ``budget.max_cost`` refuses one.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudtrain.backends.aws import pricing as sagemaker
from cloudtrain.backends.azure import pricing as azure

#: SageMaker managed spot as a fraction of on-demand: an ASSUMPTION, not a price. AWS
#: states managed spot saves "up to 90 %" over on-demand; what a job saves is known only
#: afterwards, from its billable against its training time. 0.3 (a 70 % saving) is a
#: middle figure for the instance families of the table, as of its date; it was not
#: fetched or checked (no network here). Used to estimate spot attempts before they run
#: and while they run; a finished SageMaker job is priced from its billable seconds.
MANAGED_SPOT_FRACTION = 0.3

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Price:
    """What ``count`` instances of a type cost per hour, and which table says so."""

    instance_type: str
    count: int
    on_demand_usd_per_hour: float  # all instances together
    spot_usd_per_hour: float
    table: str  # where the figures come from, for plans and reports

    def usd_per_hour(self, spot: bool) -> float:
        return self.spot_usd_per_hour if spot else self.on_demand_usd_per_hour

    def usd(self, seconds: float, spot: bool) -> float:
        """Dollars for ``seconds`` of the instances' time."""
        return self.usd_per_hour(spot) * max(seconds, 0.0) / SECONDS_PER_HOUR


def price(instance_type: str, count: int = 1) -> Price | None:
    """The price of ``count`` instances of ``instance_type``; None when no table has it."""
    if count < 1:
        raise ValueError(f"count must be >= 1 (got {count})")
    on_demand = sagemaker.ON_DEMAND_USD_PER_HOUR.get(instance_type)
    if on_demand is not None:
        return Price(
            instance_type,
            count,
            on_demand * count,
            on_demand * MANAGED_SPOT_FRACTION * count,
            f"SageMaker training on-demand, us-east-1, {sagemaker.PRICES_AS_OF}; managed spot "
            f"assumed {MANAGED_SPOT_FRACTION:.0%} of it",
        )
    size = next(
        (name for name in azure.DEDICATED_USD_PER_HOUR if name.lower() == instance_type.lower()),
        None,
    )
    if size is not None:
        return Price(
            size,
            count,
            azure.DEDICATED_USD_PER_HOUR[size] * count,
            azure.LOW_PRIORITY_USD_PER_HOUR[size] * count,
            f"Azure dedicated, Linux, {azure.PRICE_REGION}, {azure.PRICES_AS_OF}; low priority "
            f"{azure.LOW_PRIORITY_FRACTION:.0%} of it",
        )
    return None


def usd_per_hour(instance_type: str, count: int, spot: bool) -> float | None:
    """USD per hour for ``count`` instances on spot or on-demand; None for an unknown type."""
    found = price(instance_type, count)
    return found.usd_per_hour(spot) if found is not None else None


def priced_types() -> list[str]:
    """Every type some table prices, for messages."""
    return [*sagemaker.ON_DEMAND_USD_PER_HOUR, *azure.DEDICATED_USD_PER_HOUR]


__all__ = ["MANAGED_SPOT_FRACTION", "Price", "price", "priced_types", "usd_per_hour"]
