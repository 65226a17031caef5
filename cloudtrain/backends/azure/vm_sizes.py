"""The Azure VM sizes cloudtrain knows: one table for compute checks and for prices.

Rows come from the Azure VM size documentation (vCPUs, memory, GPUs); the price column
is the dedicated Linux price in East US, with the provenance given in ``pricing``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cloudtrain.errors import ConfigError, quote


@dataclass(frozen=True)
class VmSize:
    """One Azure VM size as Azure ML training uses it."""

    name: str
    vcpus: int
    memory_gib: float
    gpus: float = 0  # fractions for partitioned GPUs (NVadsA10 v5)
    gpu: str | None = None
    usd_per_hour: float = 0.0  # dedicated, Linux, East US: see cloudtrain.backends.azure.pricing


def _sizes(*rows: VmSize) -> Mapping[str, VmSize]:
    return MappingProxyType({row.name.lower(): row for row in rows})


#: The VM sizes cloudtrain knows, from the Azure VM size documentation (vCPUs, memory,
#: GPUs), with their dedicated price per node-hour (provenance in ``pricing``). Sizes are
#: case-insensitive on Azure, hence the lower-case keys.
SUPPORTED_VM_SIZES: Mapping[str, VmSize] = _sizes(
    # General purpose, Dv2 / DSv2
    VmSize("Standard_DS1_v2", 1, 3.5, usd_per_hour=0.073),
    VmSize("Standard_DS2_v2", 2, 7, usd_per_hour=0.146),
    VmSize("Standard_DS3_v2", 4, 14, usd_per_hour=0.293),
    VmSize("Standard_DS4_v2", 8, 28, usd_per_hour=0.585),
    VmSize("Standard_DS5_v2", 16, 56, usd_per_hour=1.17),
    # Memory optimized, DSv2 11-14
    VmSize("Standard_DS11_v2", 2, 14, usd_per_hour=0.185),
    VmSize("Standard_DS12_v2", 4, 28, usd_per_hour=0.371),
    VmSize("Standard_DS13_v2", 8, 56, usd_per_hour=0.741),
    VmSize("Standard_DS14_v2", 16, 112, usd_per_hour=1.482),
    # General purpose, Dsv3
    VmSize("Standard_D2s_v3", 2, 8, usd_per_hour=0.096),
    VmSize("Standard_D4s_v3", 4, 16, usd_per_hour=0.192),
    VmSize("Standard_D8s_v3", 8, 32, usd_per_hour=0.384),
    VmSize("Standard_D16s_v3", 16, 64, usd_per_hour=0.768),
    VmSize("Standard_D32s_v3", 32, 128, usd_per_hour=1.536),
    # Memory optimized, Esv3
    VmSize("Standard_E4s_v3", 4, 32, usd_per_hour=0.252),
    VmSize("Standard_E8s_v3", 8, 64, usd_per_hour=0.504),
    VmSize("Standard_E16s_v3", 16, 128, usd_per_hour=1.008),
    # Compute optimized, Fsv2
    VmSize("Standard_F2s_v2", 2, 4, usd_per_hour=0.0846),
    VmSize("Standard_F4s_v2", 4, 8, usd_per_hour=0.169),
    VmSize("Standard_F8s_v2", 8, 16, usd_per_hour=0.338),
    VmSize("Standard_F16s_v2", 16, 32, usd_per_hour=0.677),
    VmSize("Standard_F32s_v2", 32, 64, usd_per_hour=1.353),
    VmSize("Standard_F72s_v2", 72, 144, usd_per_hour=3.045),
    # NVIDIA V100
    VmSize("Standard_NC6s_v3", 6, 112, 1, "V100 16 GB", usd_per_hour=3.06),
    VmSize("Standard_NC12s_v3", 12, 224, 2, "V100 16 GB", usd_per_hour=6.12),
    VmSize("Standard_NC24s_v3", 24, 448, 4, "V100 16 GB", usd_per_hour=12.24),
    VmSize("Standard_NC24rs_v3", 24, 448, 4, "V100 16 GB, InfiniBand", usd_per_hour=13.464),
    # NVIDIA T4
    VmSize("Standard_NC4as_T4_v3", 4, 28, 1, "T4 16 GB", usd_per_hour=0.526),
    VmSize("Standard_NC8as_T4_v3", 8, 56, 1, "T4 16 GB", usd_per_hour=0.752),
    VmSize("Standard_NC16as_T4_v3", 16, 110, 1, "T4 16 GB", usd_per_hour=1.204),
    VmSize("Standard_NC64as_T4_v3", 64, 440, 4, "T4 16 GB", usd_per_hour=4.352),
    # NVIDIA A10 (the smaller sizes get a partition of one GPU)
    VmSize("Standard_NV6ads_A10_v5", 6, 55, 1 / 6, "A10 1/6 partition", usd_per_hour=0.454),
    VmSize("Standard_NV12ads_A10_v5", 12, 110, 1 / 3, "A10 1/3 partition", usd_per_hour=0.908),
    VmSize("Standard_NV18ads_A10_v5", 18, 220, 1 / 2, "A10 1/2 partition", usd_per_hour=1.6),
    VmSize("Standard_NV36ads_A10_v5", 36, 440, 1, "A10 24 GB", usd_per_hour=3.2),
    # NVIDIA A100
    VmSize("Standard_NC24ads_A100_v4", 24, 220, 1, "A100 80 GB", usd_per_hour=3.673),
    VmSize("Standard_NC48ads_A100_v4", 48, 440, 2, "A100 80 GB", usd_per_hour=7.346),
    VmSize("Standard_NC96ads_A100_v4", 96, 880, 4, "A100 80 GB", usd_per_hour=14.692),
    VmSize("Standard_ND96asr_v4", 96, 900, 8, "A100 40 GB, InfiniBand", usd_per_hour=27.197),
    VmSize("Standard_ND96amsr_A100_v4", 96, 1900, 8, "A100 80 GB, InfiniBand", usd_per_hour=32.77),
)

#: Sizes Azure has retired, with the usual replacement.
RETIRED_VM_SIZES: Mapping[str, str] = MappingProxyType(
    {
        "standard_nc6": "Standard_NC4as_T4_v3 or Standard_NC6s_v3",
        "standard_nc12": "Standard_NC8as_T4_v3 or Standard_NC12s_v3",
        "standard_nc24": "Standard_NC64as_T4_v3 or Standard_NC24s_v3",
        "standard_nc6s_v2": "Standard_NC6s_v3",
        "standard_nc12s_v2": "Standard_NC12s_v3",
        "standard_nc24s_v2": "Standard_NC24s_v3",
        "standard_nv6": "Standard_NV6ads_A10_v5",
        "standard_nv12": "Standard_NV12ads_A10_v5",
        "standard_nd6s": "Standard_NC24ads_A100_v4",
    }
)

#: SageMaker types people carry over, and the closest Azure size (vCPUs, memory, GPU).
SAGEMAKER_EQUIVALENTS: Mapping[str, str] = MappingProxyType(
    {
        "ml.m5.large": "Standard_D2s_v3",
        "ml.m5.xlarge": "Standard_D4s_v3",
        "ml.m5.2xlarge": "Standard_D8s_v3",
        "ml.m5.4xlarge": "Standard_D16s_v3",
        "ml.c5.xlarge": "Standard_F4s_v2",
        "ml.c5.2xlarge": "Standard_F8s_v2",
        "ml.c5.4xlarge": "Standard_F16s_v2",
        "ml.p3.2xlarge": "Standard_NC6s_v3",
        "ml.p3.8xlarge": "Standard_NC24s_v3",
        "ml.g4dn.xlarge": "Standard_NC4as_T4_v3",
        "ml.g4dn.2xlarge": "Standard_NC8as_T4_v3",
        "ml.g5.xlarge": "Standard_NV36ads_A10_v5",
        "ml.p4d.24xlarge": "Standard_ND96asr_v4",
    }
)


# --- lookups -----------------------------------------------------------------------------------


def vm_size(name: str, field: str = "compute.instance_type") -> VmSize:
    """The known size for ``name`` (any case), or a ConfigError naming the closest ones."""
    key = name.strip().lower()
    found = SUPPORTED_VM_SIZES.get(key)
    if found is not None:
        return found
    if key.startswith("ml."):
        hint = SAGEMAKER_EQUIVALENTS.get(key)
        similar = f"; the closest Azure size is {hint}" if hint else ""
        raise ConfigError(
            field,
            f"{quote(name)} is a SageMaker instance type; Azure ML takes a VM size such as "
            f"Standard_DS3_v2{similar}",
        )
    if key in RETIRED_VM_SIZES:
        raise ConfigError(
            field, f"{quote(name)} has been retired by Azure; use {RETIRED_VM_SIZES[key]} instead"
        )
    close = difflib.get_close_matches(key, list(SUPPORTED_VM_SIZES), n=3, cutoff=0.75)
    message = f"unknown Azure ML VM size {quote(name)}"
    if close:
        names = " or ".join(repr(SUPPORTED_VM_SIZES[c].name) for c in close)
        raise ConfigError(field, f"{message}; did you mean {names}?")
    known = ", ".join(size.name for size in SUPPORTED_VM_SIZES.values())
    raise ConfigError(field, f"{message}; known sizes: {known}")


def is_gpu_size(vm_size_name: str) -> bool:
    """True for sizes with (a share of) an NVIDIA GPU: every Azure N-series size."""
    known = SUPPORTED_VM_SIZES.get(vm_size_name.strip().lower())
    if known is not None:
        return known.gpus > 0
    return vm_size_name.strip().lower().startswith("standard_n")
