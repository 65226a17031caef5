"""What an Azure ML training run cost, and what low priority saved, in dollars.

Azure ML bills the VMs of a cluster per node-second at the VM's Linux price; a
low-priority cluster pays the low-priority price for the same time, and can be
preempted. No offline API gives either price, hence the dated table below.

Provenance, plainly: the dedicated prices (the ``usd_per_hour`` column of the VM-size
table in ``vm_sizes``) were written from memory of the public "Azure
Machine Learning pricing" / "Linux Virtual Machines pricing" pages (pay as you go, Linux,
region East US) as they stood around ``PRICES_AS_OF``; it was not fetched (this machine
has no network) and was not checked against the Azure Retail Prices API. The
low-priority column is not remembered per size: it is the dedicated price less 80 %,
the discount those pages showed for low-priority VMs of these series. Low-priority
capacity is now backed by Azure Spot, whose prices float, so that column is the roughest
part. Prices differ by region and change over time: treat every figure as an estimate
and re-check the table before relying on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cloudtrain.backends.azure.vm_sizes import SUPPORTED_VM_SIZES

#: The month the table describes (approximate; see the module docstring).
PRICES_AS_OF = "2024-06"
#: The region the prices are for.
PRICE_REGION = "eastus"
#: Low priority as a fraction of dedicated (an 80 % discount; see the module docstring).
LOW_PRIORITY_FRACTION = 0.2

#: USD per node-hour, dedicated, Linux, East US, as of PRICES_AS_OF: the price column of
#: the one VM-size table (cloudtrain.backends.azure.vm_sizes).
DEDICATED_USD_PER_HOUR: Mapping[str, float] = MappingProxyType(
    {size.name: size.usd_per_hour for size in SUPPORTED_VM_SIZES.values()}
)

#: USD per node-hour, low priority: derived, see LOW_PRIORITY_FRACTION.
LOW_PRIORITY_USD_PER_HOUR: Mapping[str, float] = MappingProxyType(
    {
        size: round(price * LOW_PRIORITY_FRACTION, 4)
        for size, price in DEDICATED_USD_PER_HOUR.items()
    }
)

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class AzureCost:
    """One run's node time at its tier's price, against the same time on dedicated."""

    vm_size: str
    nodes: int
    seconds: float
    low_priority: bool
    usd_per_node_hour: float
    billed_usd: float
    dedicated_usd: float
    saved_usd: float
    saved_percent: float
    prices_as_of: str = PRICES_AS_OF
    region: str = PRICE_REGION


def estimate_cost(vm_size: str, nodes: int, seconds: float, low_priority: bool) -> AzureCost | None:
    """Dollars for ``nodes`` VMs of ``vm_size`` running ``seconds``; None for a size the
    table does not price. Sizes match without case, as Azure treats them."""
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1 (got {nodes})")
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0 (got {seconds})")
    known = SUPPORTED_VM_SIZES.get(vm_size.strip().lower())
    if known is None:
        return None
    size = known.name
    dedicated_rate = DEDICATED_USD_PER_HOUR[size]
    rate = LOW_PRIORITY_USD_PER_HOUR[size] if low_priority else dedicated_rate
    node_hours = nodes * seconds / SECONDS_PER_HOUR
    billed = rate * node_hours
    dedicated = dedicated_rate * node_hours
    saved = dedicated - billed
    return AzureCost(
        vm_size=size,
        nodes=nodes,
        seconds=seconds,
        low_priority=low_priority,
        usd_per_node_hour=rate,
        billed_usd=billed,
        dedicated_usd=dedicated,
        saved_usd=saved,
        saved_percent=100 * saved / dedicated if dedicated else 0.0,
    )
