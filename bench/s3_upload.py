"""cloudtrain's S3 upload against the SageMaker SDK's helper and plain concurrent boto3.

Measured side by side in one run against moto's server on loopback, a fresh bucket for
every measurement, methods alternating, median of N:

  cloudtrain   cloudtrain.sync.sync_channel on an S3Store (cold: an empty hash cache)
  sdk          sagemaker.core.s3.S3Uploader.upload -> Session.upload_data (SDK v3)
  boto3        a ThreadPoolExecutor of client.upload_file, the same concurrency and
               multipart settings as cloudtrain, botocore's default checksum (CRC32)
  boto3-sha256 the same, sending SHA-256 checksums as cloudtrain does (for reference:
               it separates the cost of the checksum from the cost of cloudtrain)

on two channels: 1,000 files of 50 KB, and one file of 256 MB. Then cloudtrain's
re-run of the unchanged channel, with the requests the server received, and a bare
LIST of the same prefix (the floor of any re-run that checks what is really in S3).

Targets (issue 12): small files >= 1.5x faster than the SDK and no slower than boto3
(1.0x); the 256 MB file within 10% of boto3; unchanged re-run >= 20x faster than the
first upload, with 0 PUTs.
No threshold is asserted: it prints the numbers and says which targets were met.

moto's server runs in a child process by default (``--server process``), so that it
does not share this process's GIL the way S3 never does; ``--server thread`` runs it
in-process instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
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

REGION = "us-east-1"
COUNTS_PATH = "/_bench/counts"

TARGET_VS_SDK = 1.5  # cloudtrain at least this many times faster than the SDK (small files)


# -- moto's server, with a count of what it received ------------------------------------


class _Counter:
    """WSGI middleware: count requests by method; GET/DELETE ``/_bench/counts`` reads/resets."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path == COUNTS_PATH:
            with self.lock:
                body = json.dumps(self.counts).encode()
                if method == "DELETE":
                    self.counts = {}
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if not path.startswith("/moto-api"):
            with self.lock:
                self.counts[method] = self.counts.get(method, 0) + 1
        return self.app(environ, start_response)


def _start_moto() -> Any:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    wsgi = server._server
    assert wsgi is not None
    wsgi.app = _Counter(wsgi.app)
    return server


def _serve_in_child(ports: Any, stop: Any) -> None:
    server = _start_moto()
    ports.put(server.get_host_and_port()[1])
    stop.wait()
    server.stop()


class Moto:
    """moto's server in a child process (default) or a thread of this one."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        if mode == "thread":
            self._server = _start_moto()
            port = self._server.get_host_and_port()[1]
        else:
            context = multiprocessing.get_context("spawn")
            ports, self._stop = context.Queue(), context.Event()
            self._process = context.Process(
                target=_serve_in_child, args=(ports, self._stop), daemon=True
            )
            self._process.start()
            port = ports.get(timeout=60)
        self.url = f"http://127.0.0.1:{port}"

    def reset(self) -> None:
        import requests

        requests.post(f"{self.url}/moto-api/reset", timeout=60).raise_for_status()

    def counts(self, clear: bool = False) -> dict[str, int]:
        import requests

        method = requests.delete if clear else requests.get
        response = method(f"{self.url}{COUNTS_PATH}", timeout=10)
        response.raise_for_status()
        counts: dict[str, int] = response.json()
        return counts

    def stop(self) -> None:
        if self.mode == "thread":
            self._server.stop()
        else:
            self._stop.set()
            self._process.join(timeout=10)


# -- the uploaders --------------------------------------------------------------------


def make_uploaders(work: Path) -> dict[str, Callable[..., None]]:
    """name -> upload(source, bucket, prefix), with clients and imports built beforehand."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.s3 import S3Uploader

    from cloudtrain.backends.aws import s3 as cloudtrain_s3
    from cloudtrain.backends.aws.clients import MAX_POOL_CONNECTIONS, AwsClients
    from cloudtrain.sync import sync_channel

    clients = AwsClients(boto3.Session(region_name=REGION))
    clients.client("s3")
    caches = iter(range(1_000_000))
    last_cache: list[Path] = []

    def cloudtrain(source: Path, bucket: str, prefix: str, rerun: bool = False) -> None:
        if not rerun:
            last_cache[:] = [work / "caches" / str(next(caches))]  # cold: every file hashed
        sync_channel(
            cloudtrain_s3.S3Store(clients, bucket),
            channel="bench",
            source=source,
            prefix=prefix,
            manifest_key=f"manifests/{prefix}.json",
            cache_dir=last_cache[0],
            progress=False,
            log=lambda line: None,
        )

    session = Session(
        boto_session=boto3.Session(region_name=REGION), default_bucket="sagemaker-bench-default"
    )

    def sdk(source: Path, bucket: str, prefix: str) -> None:
        S3Uploader.upload(str(source), f"s3://{bucket}/{prefix}", sagemaker_session=session)

    client = boto3.Session(region_name=REGION).client(
        "s3",
        config=Config(
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=MAX_POOL_CONNECTIONS,
        ),
    )
    transfer = TransferConfig(
        multipart_threshold=cloudtrain_s3.MULTIPART_THRESHOLD_BYTES,
        multipart_chunksize=cloudtrain_s3.MULTIPART_CHUNK_BYTES,
        max_concurrency=cloudtrain_s3.MAX_CONCURRENCY,
    )

    def plain_boto3(extra: dict[str, str] | None) -> Callable[[Path, str, str], None]:
        def upload(source: Path, bucket: str, prefix: str) -> None:
            root = source.parent if source.is_file() else source
            files = [source] if source.is_file() else [p for p in root.rglob("*") if p.is_file()]

            def one(path: Path) -> None:
                key = f"{prefix}/{path.relative_to(root).as_posix()}"
                client.upload_file(str(path), bucket, key, Config=transfer, ExtraArgs=extra)

            with ThreadPoolExecutor(cloudtrain_s3.MAX_CONCURRENCY) as pool:
                list(pool.map(one, files))

        return upload

    return {
        "cloudtrain": cloudtrain,
        "sdk": sdk,
        "boto3": plain_boto3(None),  # botocore's default checksum: CRC32
        "boto3-sha256": plain_boto3({"ChecksumAlgorithm": "SHA256"}),  # cloudtrain's checksum
    }


# -- measuring --------------------------------------------------------------------------


def measure(
    moto: Moto,
    uploaders: dict[str, Callable[..., None]],
    source: Path,
    runs: int,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per method (alternating, fresh bucket each), then cloudtrain's re-runs."""
    import boto3

    s3 = boto3.Session(region_name=REGION).client("s3")
    samples: dict[str, list[float]] = {name: [] for name in uploaders}
    for run in range(runs):
        for name, upload in uploaders.items():
            moto.reset()  # frees the previous measurement's objects
            bucket = f"bench-{name}-{run}"
            s3.create_bucket(Bucket=bucket)
            started = time.perf_counter()
            upload(source, bucket, "data/bench")
            samples[name].append(time.perf_counter() - started)
    # One more first upload by cloudtrain, then RERUNS unchanged re-runs of it.
    moto.reset()
    s3.create_bucket(Bucket="bench-rerun")
    uploaders["cloudtrain"](source, "bench-rerun", "data/bench")
    moto.counts(clear=True)
    reruns, lists = [], []
    for _ in range(RERUNS):
        started = time.perf_counter()
        uploaders["cloudtrain"](source, "bench-rerun", "data/bench", rerun=True)
        reruns.append(time.perf_counter() - started)
    counts = moto.counts()
    for _ in range(RERUNS):
        started = time.perf_counter()
        s3.list_objects_v2(Bucket="bench-rerun", Prefix="data/bench/")
        lists.append(time.perf_counter() - started)
    return samples, {"seconds": reruns, "counts": counts, "list": statistics.median(lists)}


def report(title: str, samples: dict[str, list[float]], rerun: dict[str, Any]) -> dict[str, float]:
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\n{title}")
    for name, values in samples.items():
        runs = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name:13} {median[name]:7.3f} s   (runs: {runs})")
    ratios = {
        "vs_sdk": median["sdk"] / median["cloudtrain"],
        "vs_boto3": median["cloudtrain"] / median["boto3"],
        "vs_boto3_sha256": median["cloudtrain"] / median["boto3-sha256"],
        "rerun": median["cloudtrain"] / statistics.median(rerun["seconds"]),
        "puts": rerun["counts"].get("PUT", 0) + rerun["counts"].get("POST", 0),
    }
    print(f"  sdk / cloudtrain:            {ratios['vs_sdk']:5.2f}x  (> 1: cloudtrain is faster)")
    for name in ("boto3", "boto3-sha256"):
        ratio = ratios[f"vs_{name.replace('-', '_')}"]
        print(f"  cloudtrain / {name:15} {ratio:5.2f}x  ({(ratio - 1) * 100:+.1f}% time)")
    runs = ", ".join(f"{value:.3f}" for value in rerun["seconds"])
    print(
        f"  unchanged re-run:            {statistics.median(rerun['seconds']):.3f} s "
        f"(runs: {runs}), {ratios['rerun']:.1f}x faster than the first upload\n"
        f"    server received {rerun['counts'].get('PUT', 0)} PUT, "
        f"{rerun['counts'].get('POST', 0)} POST, {rerun['counts'].get('GET', 0)} GET "
        f"in {len(rerun['seconds'])} re-runs; a bare LIST of the prefix alone takes "
        f"{rerun['list']:.3f} s here"
    )
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions, small files")
    parser.add_argument("--big-runs", type=int, default=7, help="repetitions, 256 MB file")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudtrain-s3-bench-"))
    (work / "caches").mkdir()
    telemetry = work / "sagemaker-config.yaml"
    telemetry.write_text(
        "SchemaVersion: '1.0'\n"
        "SageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
    )
    # moto spills objects over ~5 MB to temp files by default; on this disk that made the
    # 256 MB measurements swing between 2 and 4.5 s. In memory, for every method alike.
    os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(1024 * 1024 * 1024))
    moto = Moto(args.server)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=moto.url,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        SAGEMAKER_USER_CONFIG_OVERRIDE=str(telemetry),
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        print(
            f"moto server ({args.server}) at {moto.url}; {os.cpu_count()} cores; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        data = make_data(work)
        uploaders = make_uploaders(work)
        small = report(
            f"{SMALL_FILES} files x {SMALL_BYTES // 1000} KB, median of {args.runs}",
            *measure(moto, uploaders, data["small"], args.runs),
        )
        big = report(
            f"1 file x {BIG_BYTES // (1024 * 1024)} MB, median of {args.big_runs}",
            *measure(moto, uploaders, data["big"], args.big_runs),
        )
        print(f"\nload average at the end {os.getloadavg()[0]:.2f} (other work skews the numbers)")
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)

    faster = (
        f"small files >= {TARGET_VS_SDK:g}x faster than the SDK",
        f"{small['vs_sdk']:.2f}x",
        small["vs_sdk"] >= TARGET_VS_SDK,
    )
    print_targets("boto3", "vs_boto3", small, big, puts="PUT/POST", first=[faster])
    return 0


if __name__ == "__main__":
    sys.exit(main())
