"""cloudtrain's Azure Blob upload against azure-ai-ml's data upload and plain azure-storage-blob.

Measured side by side in one run against Azurite on loopback (restarted, empty, before
every measurement, so no method pays for another's blobs in its memory), methods
alternating, median of N:

  cloudtrain   cloudtrain.sync.sync_channel on a BlobStore (cold: an empty hash cache):
               one read per file, its sha256 from that read, an MD5 on every request
  azureml      what ``ml_client.data.create_or_update`` runs to upload a local folder:
               azure-ai-ml's ``_artifact_utilities.upload_artifact`` ->
               ``BlobStorageClient.upload`` (its own thread pool, ``upload_blob`` with
               ``validate_content=True`` and ``max_concurrency=16`` per file, then the
               confirmation metadata), called directly as ``upload_artifact`` calls it
  blob         plain azure-storage-blob: a thread pool of ``upload_blob`` calls, the same
               file and block concurrency as cloudtrain, no checksum (the SDK's default)
  blob-md5     the same with ``validate_content=True`` (an MD5 on every request, as
               cloudtrain and azure-ai-ml send): the baseline of the targets

on two channels: 1,000 files of 50 KB, and one file of 256 MB. Then cloudtrain's
re-run of the unchanged channel, with the PUTs it sent.

Targets, the S3 benchmark's against its plain-SDK baseline: the 256 MB file within 10% of
plain azure-storage-blob with the same MD5 check (``blob-md5``) and the small files no
slower (1.0x); unchanged re-run >= 20x faster than the first upload, with 0 PUTs. The
ratios to azure-ai-ml and to unchecked uploads (``blob``) are printed for reference.
No threshold is asserted: it prints the numbers and says which targets were met.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from upload_channels import (
    BIG_BYTES,
    RERUNS,
    SMALL_BYTES,
    SMALL_FILES,
    make_data,
    print_targets,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # Azurite's runner, shared with the test suite

CONTAINER = "bench"
# The targets (upload_channels) are against plain azure-storage-blob with the same check
# on the wire (an MD5 on every request, as cloudtrain and azure-ai-ml send), as the S3
# benchmark measures against boto3's upload_file, which sends a CRC32 by default. `blob`
# (no checksum at all) is printed beside it: the price of the check.


class Emulator:
    """Azurite, restarted empty for every measurement."""

    def __init__(self) -> None:
        from azurite import Azurite

        self._new = Azurite
        self.azurite: Any = None

    def fresh(self) -> Any:
        self.stop()
        self.azurite = self._new().start()
        from azure.storage.blob import ContainerClient

        with ContainerClient.from_connection_string(
            self.azurite.connection_string, CONTAINER
        ) as container:
            container.create_container()
        return self.azurite

    def stop(self) -> None:
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None


class Puts:
    """PUT requests a container client sent (azure-core's raw_request_hook)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def hook(self, request: Any) -> None:
        if request.http_request.method == "PUT":
            with self.lock:
                self.count += 1


def make_uploaders(work: Path, puts: Puts) -> dict[str, Callable[..., None]]:
    """name -> upload(azurite, source, prefix), imports done beforehand."""
    from azure.ai.ml._artifacts._blob_storage_helper import BlobStorageClient
    from azure.ai.ml._utils._asset_utils import IgnoreFile
    from azure.storage.blob import ContainerClient
    from azurite import ACCOUNT_KEY, ACCOUNT_NAME

    from cloudtrain.backends.azure import storage
    from cloudtrain.sync import sync_channel

    logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)  # "use AzCopy over 100 MB"
    caches = iter(range(1_000_000))
    last_cache: list[Path] = []

    def cloudtrain(azurite: Any, source: Path, prefix: str, rerun: bool = False) -> None:
        if not rerun:
            last_cache[:] = [work / "caches" / str(next(caches))]  # cold: every file hashed
        with ContainerClient.from_connection_string(
            azurite.connection_string, CONTAINER, raw_request_hook=puts.hook
        ) as container:
            sync_channel(
                storage.BlobStore(container),
                channel="bench",
                source=source,
                prefix=prefix,
                manifest_key=f"manifests/{prefix}.json",
                cache_dir=last_cache[0],
                progress=False,
                log=lambda line: None,
            )

    def azureml(azurite: Any, source: Path, prefix: str) -> None:
        client = BlobStorageClient(
            credential={"account_name": ACCOUNT_NAME, "account_key": ACCOUNT_KEY},
            account_url=azurite.url,
            container_name=CONTAINER,
        )
        with contextlib.redirect_stderr(io.StringIO()):  # its colour codes and blank lines
            client.upload(
                str(source),
                name="bench",
                version="1",
                ignore_file=IgnoreFile(None),
                asset_hash=uuid.uuid4().hex,
                show_progress=False,
            )

    def plain(validate: bool) -> Callable[[Any, Path, str], None]:
        def upload(azurite: Any, source: Path, prefix: str) -> None:
            files = [path for path in source.rglob("*") if path.is_file()]
            with ContainerClient.from_connection_string(
                azurite.connection_string, CONTAINER
            ) as container:

                def one(path: Path) -> None:
                    with path.open("rb") as data:
                        container.upload_blob(
                            f"{prefix}/{path.relative_to(source).as_posix()}",
                            data,
                            overwrite=True,
                            validate_content=validate,
                            max_concurrency=storage.BLOCK_CONCURRENCY,
                        )

                with ThreadPoolExecutor(storage.MAX_CONCURRENCY) as pool:
                    list(pool.map(one, files))

        return upload

    return {
        "cloudtrain": cloudtrain,
        "azureml": azureml,
        "blob": plain(False),
        "blob-md5": plain(True),
    }


def measure(
    emulator: Emulator,
    uploaders: dict[str, Callable[..., None]],
    puts: Puts,
    source: Path,
    runs: int,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per method (alternating, a fresh Azurite each), then cloudtrain's re-runs."""
    samples: dict[str, list[float]] = {name: [] for name in uploaders}
    for _ in range(runs):
        for name, upload in uploaders.items():
            azurite = emulator.fresh()
            started = time.perf_counter()
            upload(azurite, source, "data/bench")
            samples[name].append(time.perf_counter() - started)
    azurite = emulator.fresh()
    uploaders["cloudtrain"](azurite, source, "data/bench")
    puts.count = 0
    reruns = []
    for _ in range(RERUNS):
        started = time.perf_counter()
        uploaders["cloudtrain"](azurite, source, "data/bench", rerun=True)
        reruns.append(time.perf_counter() - started)
    return samples, {"seconds": reruns, "puts": puts.count}


def report(title: str, samples: dict[str, list[float]], rerun: dict[str, Any]) -> dict[str, float]:
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\n{title}")
    for name, values in samples.items():
        runs = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name:11} {median[name]:7.3f} s   (runs: {runs})")
    ratios = {
        "vs_azureml": median["azureml"] / median["cloudtrain"],
        "vs_blob": median["cloudtrain"] / median["blob"],
        "vs_blob_md5": median["cloudtrain"] / median["blob-md5"],
        "rerun": median["cloudtrain"] / statistics.median(rerun["seconds"]),
        "puts": rerun["puts"],
    }
    print(f"  azureml / cloudtrain:      {ratios['vs_azureml']:5.2f}x  (> 1: cloudtrain is faster)")
    for name in ("blob", "blob-md5"):
        ratio = ratios[f"vs_{name.replace('-', '_')}"]
        print(f"  cloudtrain / {name:12} {ratio:5.2f}x  ({(ratio - 1) * 100:+.1f}% time)")
    runs = ", ".join(f"{value:.3f}" for value in rerun["seconds"])
    print(
        f"  unchanged re-run:          {statistics.median(rerun['seconds']):.3f} s "
        f"(runs: {runs}), {ratios['rerun']:.1f}x faster than the first upload, "
        f"{rerun['puts']} PUT in {len(rerun['seconds'])} re-runs"
    )
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions, small files")
    parser.add_argument("--big-runs", type=int, default=5, help="repetitions, 256 MB file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudtrain-blob-bench-"))
    (work / "caches").mkdir()
    emulator = Emulator()
    puts = Puts()
    try:
        print(
            f"Azurite (restarted for every measurement); {os.cpu_count()} cores; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        data = make_data(work)
        uploaders = make_uploaders(work, puts)
        small = report(
            f"{SMALL_FILES} files x {SMALL_BYTES // 1000} KB, median of {args.runs}",
            *measure(emulator, uploaders, puts, data["small"], args.runs),
        )
        big = report(
            f"1 file x {BIG_BYTES // (1024 * 1024)} MB, median of {args.big_runs}",
            *measure(emulator, uploaders, puts, data["big"], args.big_runs),
        )
        print(f"\nload average at the end {os.getloadavg()[0]:.2f} (other work skews the numbers)")
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)

    print_targets("azure-storage-blob (MD5)", "vs_blob_md5", small, big)
    return 0


if __name__ == "__main__":
    sys.exit(main())
