"""What an Azure ML training run cost, and what low priority saved, in dollars.

Azure ML bills the VMs of a cluster per node-second at the VM's Linux price; a
low-priority cluster pays the low-priority price for the same time, and can be
preempted. No offline API gives either price, hence the dated table below.

Provenance, plainly: the dedicated column was written from memory of the public "Azure
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

#: The month the table describes (approximate; see the module docstring).
PRICES_AS_OF = "2024-06"
#: The region the prices are for.
PRICE_REGION = "eastus"
#: Low priority as a fraction of dedicated (an 80 % discount; see the module docstring).
LOW_PRIORITY_FRACTION = 0.2

#: USD per node-hour, dedicated, Linux, East US, as of PRICES_AS_OF.
DEDICATED_USD_PER_HOUR: Mapping[str, float] = MappingProxyType(
    {
        "Standard_DS1_v2": 0.073,
        "Standard_DS2_v2": 0.146,
        "Standard_DS3_v2": 0.293,
        "Standard_DS4_v2": 0.585,
        "Standard_DS5_v2": 1.17,
        "Standard_DS11_v2": 0.185,
        "Standard_DS12_v2": 0.371,
        "Standard_DS13_v2": 0.741,
        "Standard_DS14_v2": 1.482,
        "Standard_D2s_v3": 0.096,
        "Standard_D4s_v3": 0.192,
        "Standard_D8s_v3": 0.384,
        "Standard_D16s_v3": 0.768,
        "Standard_D32s_v3": 1.536,
        "Standard_E4s_v3": 0.252,
        "Standard_E8s_v3": 0.504,
        "Standard_E16s_v3": 1.008,
        "Standard_F2s_v2": 0.0846,
        "Standard_F4s_v2": 0.169,
        "Standard_F8s_v2": 0.338,
        "Standard_F16s_v2": 0.677,
        "Standard_F32s_v2": 1.353,
        "Standard_F72s_v2": 3.045,
        "Standard_NC6s_v3": 3.06,
        "Standard_NC12s_v3": 6.12,
        "Standard_NC24s_v3": 12.24,
        "Standard_NC24rs_v3": 13.464,
        "Standard_NC4as_T4_v3": 0.526,
        "Standard_NC8as_T4_v3": 0.752,
        "Standard_NC16as_T4_v3": 1.204,
        "Standard_NC64as_T4_v3": 4.352,
        "Standard_NV6ads_A10_v5": 0.454,
        "Standard_NV12ads_A10_v5": 0.908,
        "Standard_NV18ads_A10_v5": 1.6,
        "Standard_NV36ads_A10_v5": 3.2,
        "Standard_NC24ads_A100_v4": 3.673,
        "Standard_NC48ads_A100_v4": 7.346,
        "Standard_NC96ads_A100_v4": 14.692,
        "Standard_ND96asr_v4": 27.197,
        "Standard_ND96amsr_A100_v4": 32.77,
    }
)

#: USD per node-hour, low priority: derived, see LOW_PRIORITY_FRACTION.
LOW_PRIORITY_USD_PER_HOUR: Mapping[str, float] = MappingProxyType(
    {
        size: round(price * LOW_PRIORITY_FRACTION, 4)
        for size, price in DEDICATED_USD_PER_HOUR.items()
    }
)

SECONDS_PER_HOUR = 3600.0
_BY_LOWER = {size.lower(): size for size in DEDICATED_USD_PER_HOUR}


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
    size = _BY_LOWER.get(vm_size.strip().lower())
    if size is None:
        return None
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
