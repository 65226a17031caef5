"""The Azure ML backend: datastore uploads registered as data assets, compute clusters
ensured idempotently, curated or custom environments, command jobs on low-priority
capacity resumed from a checkpoint path on the datastore.

Each attempt is a command job named ``{pipeline}-{run}-a{n}``; a rerun of the same flow
run finds it and reattaches. Low priority is a property of an AmlCompute cluster, so the
on-demand fallback runs on a dedicated twin cluster (``{compute}-od``, min 0 nodes);
serverless jobs choose their tier per job instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain import contract
from cloudtrain.backend import LogSink, StagePlan
from cloudtrain.backends.azure import jobs, sdk
from cloudtrain.backends.azure.clients import AzureClients
from cloudtrain.backends.azure.errors import is_not_found, is_transient, service_error, text
from cloudtrain.backends.azure.settings import AzureConfig, azure_settings
from cloudtrain.backoff import Backoff
from cloudtrain.config import PipelineConfig, is_uri
from cloudtrain.data import uri_channel
from cloudtrain.errors import BackendError, ConfigError, Problems, TransientError, UnsupportedError
from cloudtrain.planning import strategy_for
from cloudtrain.recovery import Outcome
from cloudtrain.results import (
    AttemptSpec,
    AttemptStatus,
    ChannelData,
    ComputeTarget,
    ModelArtifacts,
    ResolvedEnvironment,
    TrainingResult,
)
from cloudtrain.retrying import call_with_retries
from cloudtrain.store import SKIPPED_LINK, tar_folder

if TYPE_CHECKING:
    import pandas as pd

    from cloudtrain.backends.azure.storage import BlobStore

FALLBACK_SUFFIX = "-od"
MAX_COMPUTE_NAME = 16  # AmlCompute names: 2 to 16 characters
CANCELED_BY_US = ("cloudtrain:canceled-by", "orchestrator")
STUDIO_URL = (
    "https://ml.azure.com/runs/{job}?wsid=/subscriptions/{sub}/resourcegroups/{rg}/workspaces/{ws}"
)


def fallback_compute_name(compute: str) -> str:
    """The dedicated twin of a low-priority cluster, within AmlCompute's 16 characters,
    and never the cluster itself (a 16-character name ending in the suffix)."""
    twin = compute[: MAX_COMPUTE_NAME - len(FALLBACK_SUFFIX)] + FALLBACK_SUFFIX
    if twin.lower() == compute.lower():
        twin = compute[: MAX_COMPUTE_NAME - len(FALLBACK_SUFFIX) - 1] + "d" + FALLBACK_SUFFIX
    return twin


class AzureBackend:
    """Runs the stages on one Azure ML workspace through an MLClient and blob clients."""

    name = "azure"
    settings = AzureConfig
    description = (
        "Train on Azure ML: data to a datastore as data assets, one command job per "
        "attempt on low-priority capacity, all attempts of a run sharing one checkpoint "
        "path, dedicated capacity as the last resort."
    )

    #: No secret value passes through the orchestrator: the job reads Key Vault.
    secret_kinds: tuple[str, ...] = ()
    job_secret_kinds: tuple[str, ...] = jobs.JOB_SECRET_KINDS

    #: Seconds a command job takes to start, the budget's default restart overhead: an
    #: AmlCompute cluster scaling up from its minimum (0 by default) and the node pulling
    #: the environment's image commonly take 5 to 10 minutes; the upper end is taken.
    #: A typical figure, not measured here (no network).
    typical_start_seconds = 600.0

    def __init__(self, config: PipelineConfig, clients: AzureClients | None = None) -> None:
        self._config = config
        self._clients = clients
        self.poll = Backoff()
        self._pending: dict[str, list[str]] = {}
        self._last_status: dict[str, str] = {}
        self._input_kinds: dict[str, str] = {}  # channel URI -> uri_folder | uri_file
        self._containers: dict[str, Any] = {}  # datastore -> its blob container

    @classmethod
    def from_config(cls, config: PipelineConfig) -> AzureBackend:
        return cls(config)

    @property
    def clients(self) -> AzureClients:
        if self._clients is None:
            self._clients = AzureClients.from_config(azure_settings(self._config))
        return self._clients

    @property
    def ml(self) -> Any:
        return self.clients.ml_client

    def _compute_log(self, line: str) -> None:
        """Dropped: what ensure_compute did is also in the target's details, which the
        ensure-compute task logs."""
        del line

    # -- pure -----------------------------------------------------------------------

    def validate(self, config: PipelineConfig) -> None:
        from cloudtrain.backends.azure.compute import validate_compute

        azure = azure_settings(config)
        problems = Problems()
        for name in ("subscription_id", "resource_group", "workspace"):
            if not getattr(azure, name):
                problems.add(ConfigError(f"azure.{name}", "is required for cloud azure"))
        if config.environment.builtin:
            problems.add(
                UnsupportedError(
                    "environment.builtin",
                    "Azure ML has no built-in algorithms; use environment.framework or curated",
                )
            )
        for channel, location in config.data.items():
            if is_uri(location) and not location.startswith("azureml:"):
                problems.add(
                    UnsupportedError(
                        f"data.{channel}",
                        f"{location}: cloud azure reads azureml:// URIs, azureml:name:version "
                        "data assets and local paths",
                    )
                )
        with problems.check():
            validate_compute(config)
        with problems.check():
            jobs.check_input_modes(config)
        problems.raise_if_any()

    def plan_stages(self, config: PipelineConfig) -> StagePlan:
        from cloudtrain.backends.azure.compute import desired_cluster
        from cloudtrain.backends.azure.environments import plan_environment
        from cloudtrain.backends.azure.vm_sizes import is_gpu_size

        azure = azure_settings(config)
        bodies: dict[str, Any] = {
            name: sdk.rest_body(
                desired_cluster(_with_compute(config, name, spot), low_priority=spot)
            )
            for name, spot in self._compute_plan(config).items()  # empty unless amlcompute
        }
        data = {}
        channels: dict[str, str] = {}
        for channel, source in config.data.items():
            if is_uri(source):
                channels[channel] = source
                continue
            path = self._data_path(config, channel)
            asset = self._data_asset(config, channel, "<content-digest>", path)
            data[channel] = {
                "source": source,
                "to": jobs.datastore_uri(azure.datastore, path),
                "data_asset": sdk.rest_body(asset),
            }
            channels[channel] = f"azureml:{asset.name}:{asset.version}"  # a uri_folder
        return StagePlan(
            channels=channels,
            compute=ComputeTarget(
                name=azure.compute or "serverless",
                instance_type=config.compute.instance_type,
                instance_count=config.compute.instance_count,
            ),
            environment=ResolvedEnvironment(
                kind=config.environment.kind,
                uri="<resolved environment>",
                description="resolved when the run starts",
            ),
            requests={
                "workspace": f"{azure.subscription_id}/{azure.resource_group}/{azure.workspace}",
                "compute": bodies or {"type": azure.compute_type, "name": azure.compute},
                "environment": plan_environment(
                    config, gpu=is_gpu_size(config.compute.instance_type)
                ),
                "data": data,
            },
        )

    def attempt_request(self, config: PipelineConfig, spec: AttemptSpec) -> dict[str, Any]:
        """The attempt's command job as azure-ai-ml serializes it for the REST API."""
        return jobs.rest_body(self._command_job(config, spec))

    def checkpoint_location(self, config: PipelineConfig, run_id: str) -> str:
        azure = azure_settings(config)
        path = f"{azure.prefix}/{config.name}/checkpoints/{run_id}"
        return jobs.datastore_uri(azure.datastore, path)

    def checkpoint_store(self, config: PipelineConfig, uri: str) -> tuple[BlobStore, str]:
        """Checkpoint location ``uri`` (a datastore path) as the datastore's container and
        the path inside it: where a checkpoint following a route is read or copied into.
        The datastore is looked up once per run, as for the uploads."""
        from cloudtrain.backends.azure.storage import BlobStore

        try:
            datastore, path = jobs.parse_datastore_uri(uri)
        except ValueError as exc:
            raise BackendError(f"checkpoint location {exc}") from exc
        return BlobStore(self._container(datastore)), path

    # -- the stages -------------------------------------------------------------------

    def upload_channel(
        self,
        config: PipelineConfig,
        channel: str,
        source: Path | pd.DataFrame,
        log: LogSink,
    ) -> ChannelData:
        """The channel to the datastore, registered as the data asset of its content."""
        from cloudtrain.backends.azure.storage import BlobStore
        from cloudtrain.sync import sync_channel

        azure = azure_settings(config)
        path = self._data_path(config, channel)
        uploaded = sync_channel(
            BlobStore(self._container(azure.datastore)),
            channel=channel,
            source=source,
            prefix=path,
            manifest_key=f"{azure.prefix}/{config.name}/manifests/{channel}.json",
            cache_dir=config.work_dir / "azure",
            log=log,
        )
        asset = self._register(config, channel, uploaded.digest[:16], path)
        uri = f"azureml:{asset.name}:{asset.version}"
        self._input_kinds[uri] = "uri_folder"
        return replace(uploaded, uri=uri)

    def use_data_uri(self, config: PipelineConfig, channel: str, uri: str) -> ChannelData:
        try:
            asset = self._asset(uri)
        except Exception as exc:
            raise ConfigError(f"data.{channel}", f"data asset {uri} was not found") from exc
        self._input_kinds[uri] = _input_kind(uri) if asset is None else text(asset.type)
        return uri_channel(channel, uri)

    def ensure_compute(self, config: PipelineConfig) -> ComputeTarget:
        from cloudtrain.backends.azure.compute import ensure_compute

        quiet = self._compute_log
        target: ComputeTarget = ensure_compute(self.ml, config, log=quiet)
        twin = self._fallback_name(config)
        if twin:
            dedicated = ensure_compute(self.ml, _with_compute(config, twin, spot=False), log=quiet)
            target = replace(
                target,
                details={**target.details, "on_demand_fallback": dedicated.to_dict()},
                warnings=(*target.warnings, *dedicated.warnings),
            )
        return target

    def resolve_environment(
        self, config: PipelineConfig, compute: ComputeTarget
    ) -> ResolvedEnvironment:
        from cloudtrain.backends.azure.environments import resolve_environment
        from cloudtrain.backends.azure.vm_sizes import is_gpu_size

        resolved = resolve_environment(
            self.ml,
            config,
            gpu=is_gpu_size(config.compute.instance_type),
            curated_client=self.clients.registry_client,
        )
        return ResolvedEnvironment(
            kind=resolved.kind,
            uri=resolved.reference,
            description=f"{resolved.kind} {resolved.name}"
            + (f" version {resolved.version}" if resolved.version else "")
            + (f" (image {resolved.image})" if resolved.image else ""),
            warnings=tuple(resolved.warnings),
        )

    def submit_attempt(self, config: PipelineConfig, spec: AttemptSpec) -> str:
        existing = self._get_job(spec.job_name, missing_ok=True)
        if existing is not None:
            self._pending[spec.job_name] = [
                f"reattached to {spec.job_name} ({text(existing.status)}): it was created by "
                "an earlier run of this flow"
            ]
            return spec.job_name
        for uri in spec.channels.values():
            if uri not in self._input_kinds:  # reattached or injected: look it up
                self._input_kinds[uri] = self._kind_of(uri)
        job = self._command_job(config, spec)
        try:
            created = self.ml.jobs.create_or_update(job)
        except Exception as exc:
            raise service_error(exc, f"creating job {spec.job_name}") from exc
        link = getattr(created, "studio_url", None) or self._studio_url(spec.job_name)
        self._pending[spec.job_name] = [f"created {spec.job_name}: {link}"]
        return spec.job_name

    def describe_attempt(self, handle: str) -> AttemptStatus:
        try:
            job = self._get_job(handle)
        except TransientError as exc:
            self._pending.setdefault(handle, []).append(f"get job throttled: {exc}")
            return AttemptStatus()
        assert job is not None
        status = text(job.status)
        if self._last_status.get(handle) != status:
            self._pending.setdefault(handle, []).append(f"status {status}")
            self._last_status[handle] = status
        if status in jobs.RUNNING_STATES:
            return AttemptStatus()
        details = self._run_details(handle)
        error = _error_message(details)
        canceled_by_us = (job.tags or {}).get(CANCELED_BY_US[0]) == CANCELED_BY_US[1]
        outcome, reason = jobs.classify(status, error, canceled_by_us=canceled_by_us)
        started = getattr(details, "start_time_utc", None)
        ended = getattr(details, "end_time_utc", None)
        lines, metrics = self._job_log(handle)
        self._pending.setdefault(handle, []).extend(lines)
        seconds = (ended - started).total_seconds() if started and ended else None
        return AttemptStatus(
            outcome=outcome,
            reason=reason,
            metrics=metrics,
            started_at=started if isinstance(started, datetime) else None,
            ended_at=ended if isinstance(ended, datetime) else None,
            training_seconds=seconds,
            billable_seconds=seconds,
        )

    def read_logs(self, handle: str) -> list[str]:
        return self._pending.pop(handle, [])

    def stop_attempt(self, handle: str) -> None:
        """Cancel the job, tagged so that a rerun of this flow run resumes instead of ending."""
        try:
            job = self._get_job(handle)
            if job is None or text(job.status) not in jobs.RUNNING_STATES:
                return
            job.tags = {**(job.tags or {}), CANCELED_BY_US[0]: CANCELED_BY_US[1]}
            self.ml.jobs.create_or_update(job)
            self.ml.jobs.begin_cancel(handle).result()
        except Exception as exc:
            raise service_error(exc, f"canceling {handle}") from exc

    def collect_artifacts(self, config: PipelineConfig, result: TrainingResult) -> ModelArtifacts:
        from cloudtrain.backends.azure.pricing import estimate_cost

        final = result.final
        if final is None or final.outcome is not Outcome.SUCCEEDED:
            raise BackendError("no attempt succeeded, so there is no model to collect")
        run_dir = config.work_dir / "runs" / config.name / result.run_id
        download = run_dir / "download"
        try:
            self.ml.jobs.download(
                final.job_name, download_path=str(download), output_name=jobs.MODEL_OUTPUT
            )
        except Exception as exc:
            raise service_error(exc, f"downloading the model of {final.job_name}") from exc
        found = [p for p in download.rglob("*") if p.is_file()]
        if not found:
            raise BackendError(f"{final.job_name} wrote no files to SM_MODEL_DIR")
        model_dir = _common_folder(download, found)
        archive = run_dir / "model.tar.gz"
        try:
            skipped = tar_folder(model_dir, archive)
        except Exception as exc:  # whatever it is, the downloaded model must not be lost
            raise BackendError(
                f"packing the model failed ({exc}); the trained model is kept at {model_dir}"
            ) from exc
        cost = _run_cost(config, result, estimate_cost)
        model_uri = f"azureml://jobs/{final.job_name}/outputs/{jobs.MODEL_OUTPUT}"
        links = {"Azure ML studio": self._studio_url(final.job_name)}
        if azure_settings(config).register_model:
            links["registered model"] = self._register_model(config, final.job_name, model_uri)
        return ModelArtifacts(
            model_uri=model_uri,
            model_archive=str(archive),
            local_model_dir=model_dir,
            metrics=dict(final.metrics),
            links=links,
            cost=cost,
            warnings=tuple(f"{SKIPPED_LINK} {link}" for link in skipped),
        )

    def _register_model(self, config: PipelineConfig, job_name: str, model_uri: str) -> str:
        """A new version of the model named after the pipeline; returns ``azureml:name:v``."""
        from azure.ai.ml.entities import Model

        model = Model(
            name=config.name,
            path=model_uri,
            type="custom_model",
            description=f"trained by cloudtrain job {job_name}",
            tags={"cloudtrain:pipeline": config.name, "cloudtrain:job": job_name},
        )
        try:
            registered = self.ml.models.create_or_update(model)
        except Exception as exc:
            raise service_error(exc, f"registering model {config.name}") from exc
        return f"azureml:{registered.name}:{registered.version}"

    # -- helpers -------------------------------------------------------------------------

    def _compute_plan(self, config: PipelineConfig) -> dict[str, bool]:
        """Cluster name -> low priority, for the clusters this config needs."""
        azure = azure_settings(config)
        if azure.compute_type != "amlcompute" or not azure.compute:
            return {}
        plan = {azure.compute: config.compute.spot}
        twin = self._fallback_name(config)
        if twin:
            plan[twin] = False
        return plan

    def _fallback_name(self, config: PipelineConfig) -> str | None:
        """Low priority is a property of a cluster, so an on-demand attempt of a spot run
        needs a dedicated twin: when the strategy's route has one."""
        azure = azure_settings(config)
        if azure.compute_type != "amlcompute" or not azure.compute or not config.compute.spot:
            return None
        if all(step.spot for step in strategy_for(config).schedule()):
            return None
        return fallback_compute_name(azure.compute)

    def _compute_for(self, config: PipelineConfig, spot: bool) -> str | None:
        azure = azure_settings(config)
        if azure.compute_type == "serverless":
            return None
        if azure.compute_type == "amlcompute" and config.compute.spot and not spot:
            return self._fallback_name(config) or azure.compute
        return azure.compute

    def _command_job(self, config: PipelineConfig, spec: AttemptSpec) -> Any:
        return jobs.command_job(
            config,
            spec,
            compute=self._compute_for(config, spec.spot),
            inputs={
                channel: (self._input_kinds.get(uri) or _input_kind(uri), uri)
                for channel, uri in spec.channels.items()
            },
        )

    def _data_path(self, config: PipelineConfig, channel: str) -> str:
        return f"{azure_settings(config).prefix}/{config.name}/data/{channel}"

    def _data_asset(self, config: PipelineConfig, channel: str, version: str, path: str) -> Any:
        from azure.ai.ml.entities import Data

        return Data(
            name=f"{config.name}-{channel}",
            version=version,
            type="uri_folder",
            path=jobs.datastore_uri(azure_settings(config).datastore, path),
            description=f"cloudtrain channel {channel} of {config.name} (sha256 {version}...)",
            tags={"cloudtrain:pipeline": config.name, "cloudtrain:channel": channel},
        )

    def _register(self, config: PipelineConfig, channel: str, version: str, path: str) -> Any:
        """The data asset for this content: the same content is the same version."""
        name = f"{config.name}-{channel}"
        try:
            return self.ml.data.get(name, version=version)
        except Exception as exc:
            if not is_not_found(exc):
                raise service_error(exc, f"reading data asset {name}:{version}") from exc
        try:
            return self.ml.data.create_or_update(self._data_asset(config, channel, version, path))
        except Exception as exc:
            raise service_error(exc, f"registering data asset {name}:{version}") from exc

    def _asset(self, uri: str) -> Any:
        """The data asset an ``azureml:name[:version]`` channel names (latest without a
        version), or None for an ``azureml://`` path."""
        if not uri.startswith("azureml:") or uri.startswith("azureml://"):
            return None
        name, _, version = uri.removeprefix("azureml:").partition(":")
        return self.ml.data.get(name, version=version or None, label=None if version else "latest")

    def _kind_of(self, uri: str) -> str:
        try:
            asset = self._asset(uri)
        except Exception as exc:
            raise service_error(exc, f"reading data asset {uri}") from exc
        return _input_kind(uri) if asset is None else text(asset.type)

    def _container(self, name: str) -> Any:
        """The blob container behind datastore ``name``, looked up once per run."""
        if name not in self._containers:
            self._containers[name] = self._datastore_container(name)
        return self._containers[name]

    def _datastore_container(self, name: str) -> Any:
        try:
            store = self.ml.datastores.get(name)
        except Exception as exc:
            raise ConfigError("azure.datastore", f"datastore {name!r} was not found") from exc
        account = getattr(store, "account_name", None)
        container = getattr(store, "container_name", None)
        if not account or not container:
            raise UnsupportedError("azure.datastore", f"{name} is not an Azure Blob datastore")
        endpoint = getattr(store, "endpoint", None) or "core.windows.net"
        protocol = getattr(store, "protocol", None) or "https"
        return self.clients.container_client(f"{protocol}://{account}.blob.{endpoint}", container)

    def _get_job(self, name: str, *, missing_ok: bool = False) -> Any:
        try:
            return self.ml.jobs.get(name)
        except Exception as exc:
            if missing_ok and is_not_found(exc):
                return None
            raise service_error(exc, f"reading job {name}") from exc

    def _run_details(self, name: str) -> Any:
        """Start, end and error of a run, as the SDK's own ``jobs.stream`` reads them."""
        try:  # a private operation the proxy does not see: the same retry policy, by hand
            return call_with_retries(
                lambda: sdk.run_details(self.ml, name),
                transient=is_transient,
                what="get_run_details",
            )
        except Exception as exc:
            raise service_error(exc, f"reading the run details of {name}") from exc

    def _job_log(self, name: str) -> tuple[list[str], dict[str, float]]:
        """The script's output (user_logs/std_log.txt) and the metrics it printed."""
        import tempfile

        parser = contract.MetricParser(self._config.metrics)
        with tempfile.TemporaryDirectory(prefix="cloudtrain-azure-logs-") as tmp:
            try:
                self.ml.jobs.download(name, download_path=tmp, all=True)
            except Exception:
                return [f"(no logs could be downloaded for {name})"], {}
            lines: list[str] = []
            for log in sorted(Path(tmp).rglob("std_log*.txt")):
                for line in log.read_text(errors="replace").splitlines():
                    parser.feed(line)
                    lines.append(line)
        return lines, parser.final

    def _studio_url(self, job: str) -> str:
        azure = azure_settings(self._config)
        return STUDIO_URL.format(
            job=job, sub=azure.subscription_id, rg=azure.resource_group, ws=azure.workspace
        )


def _with_compute(config: PipelineConfig, name: str, spot: bool) -> PipelineConfig:
    return config.model_copy(
        update={
            "azure": azure_settings(config).model_copy(update={"compute": name}),
            "compute": config.compute.model_copy(update={"spot": spot}),
        }
    )


def _input_kind(uri: str) -> str:
    """An input's type before its asset is read: a datastore path's from its trailing
    slash; a data asset (``azureml:name:version``) is taken as a folder, as cloudtrain
    registers them, until the run reads the asset's own type."""
    if uri.startswith("azureml://"):
        return "uri_folder" if uri.endswith("/") else "uri_file"
    return "uri_folder"


def _common_folder(root: Path, files: list[Path]) -> Path:
    """The folder holding the model files (downloads nest them under named/output/...)."""
    folder = files[0].parent
    while not all(folder in f.parents for f in files):
        folder = folder.parent
    return folder if folder != root.parent else root


def _error_message(details: Any) -> str:
    error = getattr(getattr(details, "error", None), "error", None)
    if error is None:
        return ""
    parts = [getattr(error, "code", None), getattr(error, "message", None)]
    return ": ".join(str(part) for part in parts if part)


def _run_cost(
    config: PipelineConfig, result: TrainingResult, estimate_cost: Callable[..., Any]
) -> dict[str, Any] | None:
    """Every attempt's node time at its tier's price, against all of it on dedicated: the
    attempts that ran on Azure (a failover route's others are priced by their clouds)."""
    nodes = config.compute.instance_count
    billed = dedicated = 0.0
    seconds = 0.0
    attempts = [a for a in result.attempts if a.cloud in ("", AzureBackend.name)]
    for attempt in attempts:
        span = attempt.training_seconds or 0.0
        estimate = estimate_cost(config.compute.instance_type, nodes, span, attempt.spot)
        if estimate is None:
            return {
                "training_seconds": sum(a.training_seconds or 0 for a in attempts),
                "note": f"no price for {config.compute.instance_type}",
            }
        seconds += span
        billed += estimate.billed_usd
        dedicated += estimate.dedicated_usd
    saved = dedicated - billed
    return {
        "training_seconds": seconds,
        "billed_usd": round(billed, 4),
        "dedicated_usd": round(dedicated, 4),
        "saved_usd": round(saved, 4),
        "saved_percent": round(100 * saved / dedicated, 1) if dedicated else 0.0,
    }
