"""The AWS backend: S3 for data, SageMaker training jobs on managed spot, resumed from
checkpoints in S3 by the next attempt.

Each attempt is its own training job named ``{pipeline}-{run}-a{n}``; a rerun of the same
flow run finds the job that already exists and reattaches instead of paying twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain import secrets_launcher as launcher
from cloudtrain.backend import LogSink, StagePlan
from cloudtrain.backends.aws import training_job as jobs
from cloudtrain.backends.aws.clients import AwsClients
from cloudtrain.backends.aws.errors import error_code, is_transient, mapped
from cloudtrain.backends.aws.settings import ROLE_FORM, AwsConfig, aws_settings
from cloudtrain.backoff import Backoff
from cloudtrain.config import PipelineConfig, code_exclusions, is_uri
from cloudtrain.data import uri_channel
from cloudtrain.errors import BackendError, ConfigError, Problems, TransientError, UnsupportedError
from cloudtrain.planning import PLAN_RUN_ID
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
from cloudtrain.secrets import launcher_source
from cloudtrain.store import extract_archive

if TYPE_CHECKING:
    import pandas as pd

    from cloudtrain.backends.aws.images import ResolvedImage
    from cloudtrain.backends.aws.s3 import S3Store

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
#: A flow run's id (a UUID) as a run id; the longest one a request carries.
LONGEST_RUN_ID_CHARS = 36
STOPPED_BY_US = {"Key": "cloudtrain:stopped-by", "Value": "orchestrator"}
CONSOLE_JOB_URL = (
    "https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job}"
)


class AwsBackend:
    """Runs the stages on S3 and SageMaker through one set of boto3 clients."""

    name = "aws"
    settings = AwsConfig
    description = (
        "Train on SageMaker: data to S3, one training job per attempt on managed spot, "
        "all attempts of a run sharing one checkpoint location in S3, on-demand as the "
        "last resort."
    )

    #: No secret value passes through the orchestrator: the job reads Secrets Manager.
    secret_kinds: tuple[str, ...] = ()
    job_secret_kinds: tuple[str, ...] = jobs.JOB_SECRET_KINDS

    #: Seconds a training job takes to start, the budget's default restart overhead: the
    #: "Starting" and "Downloading" secondary statuses (instances provisioned, the image
    #: pulled) take a few minutes for a framework image, more for large GPU images.
    #: A typical figure, not measured here (no network).
    typical_start_seconds = 300.0
    #: Managed spot is billed as shorter BillableTimeInSeconds at the on-demand price.
    spot_in_billable_seconds = True

    def __init__(self, config: PipelineConfig, clients: AwsClients | None = None) -> None:
        self._config = config
        self._clients = clients
        self.poll = Backoff()
        self._seen: dict[str, int] = {}  # job -> status transitions already logged
        self._log_tokens: dict[str, dict[str, str]] = {}
        self._pending_lines: dict[str, list[str]] = {}
        self._last: dict[str, AttemptStatus] = {}
        # (run id, source folder) -> the source archive packed for that run, its S3 URI
        self._code: dict[tuple[str, Path], tuple[bytes, str]] = {}
        # (environment, region, instance type) -> the image: resolved once, asked per attempt
        self._images: dict[tuple[str, str, str], ResolvedImage] = {}

    @classmethod
    def from_config(cls, config: PipelineConfig) -> AwsBackend:
        return cls(config)

    @property
    def clients(self) -> AwsClients:
        """Built on first use, so validate() and plan() never need credentials."""
        if self._clients is None:
            self._clients = AwsClients.from_config(aws_settings(self._config))
        return self._clients

    # -- pure -----------------------------------------------------------------------

    def validate(self, config: PipelineConfig) -> None:
        from cloudtrain.backends.aws.distribution import check_distribution
        from cloudtrain.backends.aws.input_modes import check_input_modes
        from cloudtrain.backends.aws.instances import check_training_instance

        aws = aws_settings(config)  # its fields' forms were checked with the config
        problems = Problems()
        if not aws.role:
            problems.add(ConfigError("aws.role", ROLE_FORM))
        if not aws.bucket:
            problems.add(ConfigError("aws.bucket", "is required for cloud aws (an S3 bucket name)"))
        for channel, location in config.data.items():
            if is_uri(location) and not location.startswith("s3://"):
                problems.add(
                    UnsupportedError(
                        f"data.{channel}", f"{location}: cloud aws reads s3:// URIs and local paths"
                    )
                )
        if config.secrets and config.environment.kind == "builtin":
            problems.add(
                UnsupportedError(
                    "secrets",
                    "a built-in algorithm runs no script to hand secrets to; "
                    "use environment.framework or image",
                )
            )
        with problems.check():
            check_distribution(config)
        with problems.check():
            check_training_instance(config.compute.instance_type)
            image = self._image(config)  # chosen for the instance type, so only for a valid one
            with problems.check():
                check_input_modes(config, image.kind, image.name, image.version)
            if aws.role and aws.bucket:  # the request cannot be built without them
                self._check_request_limits(config)
        problems.raise_if_any()

    def _check_request_limits(self, config: PipelineConfig) -> None:
        """The longest request a run can send (the last attempt, a full-length run id),
        against SageMaker's maximums; no I/O (the code URI has its final length)."""
        from cloudtrain.backends.aws.limits import check_request_limits
        from cloudtrain.planning import job_name

        layout = jobs.S3Layout.for_config(config)
        image = self._image(config)
        run_id, last = "0" * LONGEST_RUN_ID_CHARS, config.retry.max_attempts
        spec = AttemptSpec(
            run_id=run_id,
            number=last,
            spot=config.compute.spot,
            job_name=job_name(config, run_id, last),
            checkpoint_uri=layout.checkpoint_uri(run_id),
            channels=self._channel_uris(config, layout),
            compute=ComputeTarget(
                name="sagemaker",
                instance_type=config.compute.instance_type,
                instance_count=config.compute.instance_count,
            ),
            environment=_environment(image, []),
        )
        request = jobs.create_training_job_request(
            config,
            spec,
            image_kind=image.kind,
            script_mode=image.script_mode,
            code_uri=layout.uri(layout.code_key("0" * 64)) if image.script_mode else None,
            output_uri=layout.output_uri(),
        )
        check_request_limits(request, lambda path: jobs.request_field(config, path))

    def plan_stages(self, config: PipelineConfig) -> StagePlan:
        layout = jobs.S3Layout.for_config(config)
        image = self._image(config)
        code_uri = self._code_archive(config, PLAN_RUN_ID)[1] if image.script_mode else None
        channels = self._channel_uris(config, layout)
        return StagePlan(
            channels=channels,
            compute=ComputeTarget(
                name="sagemaker",
                instance_type=config.compute.instance_type,
                instance_count=config.compute.instance_count,
            ),
            environment=_environment(image, list(image.warnings)),
            requests={
                "region": aws_settings(config).region,
                "uploads": {
                    **{
                        channel: {"source": source, "to": channels[channel]}
                        for channel, source in config.data.items()
                        if not is_uri(source)
                    },
                    **(
                        {"code": {"source": str(config.code.source_dir), "to": code_uri}}
                        if code_uri
                        else {}
                    ),
                },
                "environment": {
                    "image": image.uri,
                    "kind": image.kind,
                    "warnings": list(image.warnings),
                },
            },
        )

    def attempt_request(self, config: PipelineConfig, spec: AttemptSpec) -> dict[str, Any]:
        """The attempt's CreateTrainingJob request, checked by botocore's validator."""
        layout = jobs.S3Layout.for_config(config)
        image = self._image(config)
        request = jobs.create_training_job_request(
            config,
            spec,
            image_kind=image.kind,
            script_mode=image.script_mode,
            code_uri=self._code_archive(config, spec.run_id)[1] if image.script_mode else None,
            output_uri=layout.output_uri(),
        )
        jobs.validate_request(request)
        return request

    def verify_job_secrets(self, config: PipelineConfig) -> None:
        """At run start, before anything is created: every Secrets Manager reference the
        job will read exists (DescribeSecret: its metadata, never its value)."""
        client = self.clients.client("secretsmanager")
        problems = Problems()
        for name, ref in config.secrets.items():
            if ref.aws_secrets_manager is None:
                continue
            try:
                client.describe_secret(SecretId=ref.aws_secrets_manager)
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise mapped(exc, f"checking secrets.{name}") from exc
                problems.add(
                    ConfigError(
                        f"secrets.{name}",
                        f"no secret {ref.aws_secrets_manager[:60]!r} in AWS Secrets Manager",
                    )
                )
        problems.raise_if_any()

    def checkpoint_location(self, config: PipelineConfig, run_id: str) -> str:
        return jobs.S3Layout.for_config(config).checkpoint_uri(run_id)

    def checkpoint_store(self, config: PipelineConfig, uri: str) -> tuple[S3Store, str]:
        """Checkpoint location ``uri`` (``s3://bucket/key/``) as the bucket's store and the
        key prefix: where a checkpoint following a route is read or copied into. Nothing
        is sent until the store is used."""
        from cloudtrain.backends.aws.s3 import S3Store, parse_s3_uri

        try:
            bucket, key = parse_s3_uri(uri)
        except ValueError as exc:
            raise BackendError(f"checkpoint location {exc}") from exc
        return S3Store(self.clients, bucket), key

    # -- the stages -------------------------------------------------------------------

    def upload_channel(
        self,
        config: PipelineConfig,
        channel: str,
        source: Path | pd.DataFrame,
        log: LogSink,
    ) -> ChannelData:
        from cloudtrain.backends.aws.s3 import S3Store
        from cloudtrain.sync import sync_channel

        layout = jobs.S3Layout.for_config(config)
        return sync_channel(
            S3Store(self.clients, layout.bucket),
            channel=channel,
            source=source,
            prefix=layout.data_key(channel),
            manifest_key=layout.manifest_key(channel),
            cache_dir=config.work_dir / "aws",
            verify=aws_settings(config).verify_uploads,
            log=log,
        )

    def use_data_uri(self, config: PipelineConfig, channel: str, uri: str) -> ChannelData:
        from cloudtrain.backends.aws.s3 import require_s3_uri

        require_s3_uri(self.clients, uri, f"data.{channel}")
        return uri_channel(channel, uri)

    def ensure_compute(self, config: PipelineConfig) -> ComputeTarget:
        """SageMaker has no cluster to create: check what a job needs before one is paid for."""
        from cloudtrain.backends.aws.instances import accelerator, check_training_instance

        check_training_instance(config.compute.instance_type)
        identity = self._identity()
        warnings = self._check_role(config)
        return ComputeTarget(
            name="sagemaker",
            instance_type=config.compute.instance_type,
            instance_count=config.compute.instance_count,
            details={
                "accelerator": accelerator(config.compute.instance_type),
                "capacity": "managed spot" if config.compute.spot else "on-demand",
                "max_run": config.compute.max_run,
                "max_wait": config.compute.effective_max_wait if config.compute.spot else None,
                "caller": identity,
            },
            warnings=tuple(warnings),
        )

    def _identity(self) -> str:
        """Who the jobs will be created as (an ARN, not a secret)."""
        try:
            return str(self.clients.client("sts").get_caller_identity()["Arn"])
        except Exception as exc:
            raise mapped(exc, "GetCallerIdentity") from exc

    def _check_role(self, config: PipelineConfig) -> list[str]:
        """The role must exist and trust SageMaker; a caller who may not read IAM gets a warning."""
        role_arn = aws_settings(config).role
        assert role_arn is not None  # validate() refused a config without one
        name = role_arn.rsplit("/", 1)[-1]
        try:
            role = self.clients.client("iam").get_role(RoleName=name)["Role"]
        except Exception as exc:
            code = error_code(exc)
            if code == "NoSuchEntity":
                raise ConfigError("aws.role", f"{role_arn} does not exist") from exc
            if code in ("AccessDenied", "AccessDeniedException"):
                return [f"aws.role: cannot read {name} to check it ({code}); trusting it as given"]
            raise mapped(exc, f"GetRole {name}") from exc
        if role.get("Arn") and role["Arn"] != role_arn:
            raise ConfigError("aws.role", f"{role_arn} does not match {role['Arn']}")
        trust = json.dumps(role.get("AssumeRolePolicyDocument", {}))
        if "sagemaker.amazonaws.com" not in trust:
            raise ConfigError(
                "aws.role",
                f"{name} does not trust sagemaker.amazonaws.com, so SageMaker cannot assume it",
            )
        return []

    def resolve_environment(
        self, config: PipelineConfig, compute: ComputeTarget
    ) -> ResolvedEnvironment:
        from cloudtrain.backends.aws.images import check_ecr_image, parse_ecr_uri

        image = self._image(config)
        warnings = list(image.warnings)
        if image.kind == "image":
            warning = check_ecr_image(self.clients, parse_ecr_uri(image.uri))
            warnings += [warning] if warning else []
        return _environment(image, warnings)

    def submit_attempt(self, config: PipelineConfig, spec: AttemptSpec) -> str:
        """Create the attempt's job, or reattach when a job of that name already exists."""
        existing = self._describe(spec.job_name, missing_ok=True)
        if existing is not None:
            self._pending_lines[spec.job_name] = [
                f"reattached to {spec.job_name} ({existing.get('TrainingJobStatus')}): "
                "it was created by an earlier run of this flow"
            ]
            return spec.job_name
        request = self.attempt_request(config, spec)
        if self._image(config).script_mode:
            self._upload_code(config, spec.run_id)
        try:
            self.clients.client("sagemaker").create_training_job(**request)
        except Exception as exc:
            # A call retried after a lost answer (5xx, timeout) may find the job it created.
            lost = error_code(exc) == "ResourceInUse"
            if lost and self._describe(spec.job_name, missing_ok=True):
                self._pending_lines[spec.job_name] = [
                    f"created {spec.job_name} (the answer to the first try was lost)"
                ]
                return spec.job_name
            raise mapped(exc, f"CreateTrainingJob {spec.job_name}") from exc
        region = self.clients.region
        self._pending_lines[spec.job_name] = [
            f"created {spec.job_name}: " + CONSOLE_JOB_URL.format(region=region, job=spec.job_name)
        ]
        return spec.job_name

    def describe_attempt(self, handle: str) -> AttemptStatus:
        try:
            job = self._describe(handle)
        except TransientError as exc:  # throttled beyond botocore's retries: poll again later
            self._pending_lines.setdefault(handle, []).append(f"describe throttled: {exc}")
            return self._last.get(handle, AttemptStatus())
        assert job is not None
        self._note_transitions(handle, job)
        outcome, reason = jobs.classify(
            job, stopped_by_us=lambda: self._stopped_by_orchestrator(job)
        )
        metrics = {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", [])}
        status = AttemptStatus(
            outcome=outcome,
            reason=reason,
            metrics=metrics,
            started_at=_as_datetime(job.get("TrainingStartTime") or job.get("CreationTime")),
            ended_at=_as_datetime(job.get("TrainingEndTime") or job.get("LastModifiedTime"))
            if outcome
            else None,
            billable_seconds=job.get("BillableTimeInSeconds"),
            training_seconds=job.get("TrainingTimeInSeconds"),
        )
        self._last[handle] = status
        return status

    def read_logs(self, handle: str) -> list[str]:
        lines = self._pending_lines.pop(handle, [])
        return lines + self._cloudwatch_lines(handle)

    def stop_attempt(self, handle: str) -> None:
        """Stop the job, tagged so that a rerun of this flow run resumes instead of ending."""
        sagemaker = self.clients.client("sagemaker")
        try:
            job = sagemaker.describe_training_job(TrainingJobName=handle)
            if job["TrainingJobStatus"] not in ("InProgress", "Stopping"):
                return  # already ended: nothing bills
            sagemaker.add_tags(ResourceArn=job["TrainingJobArn"], Tags=[STOPPED_BY_US])
            sagemaker.stop_training_job(TrainingJobName=handle)
        except Exception as exc:
            raise mapped(exc, f"StopTrainingJob {handle}") from exc

    def _stopped_by_orchestrator(self, job: Mapping[str, Any]) -> bool:
        try:
            tags = self.clients.client("sagemaker").list_tags(ResourceArn=job["TrainingJobArn"])
        except Exception as exc:
            raise mapped(exc, f"ListTags {job['TrainingJobName']}") from exc
        return STOPPED_BY_US in tags.get("Tags", [])

    def collect_artifacts(self, config: PipelineConfig, result: TrainingResult) -> ModelArtifacts:
        from cloudtrain.backends.aws.s3 import S3Store, parse_s3_uri

        final = result.final
        if final is None or final.outcome is not Outcome.SUCCEEDED:
            raise BackendError("no attempt succeeded, so there is no model to collect")
        job = self._describe(final.job_name)
        assert job is not None
        model_uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if not model_uri:
            raise BackendError(f"{final.job_name} completed without ModelArtifacts")
        run_dir = config.work_dir / "runs" / config.name / result.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        archive = run_dir / "model.tar.gz"
        bucket, key = parse_s3_uri(model_uri)
        S3Store(self.clients, bucket).download_files([(key, archive)])  # checksum-checked
        model_dir = run_dir / "model"
        try:
            extract_archive(archive, model_dir)  # nothing outside model/, no link leaving it
        except BackendError as exc:
            raise BackendError(f"{exc}; the model is kept at {model_uri} and {archive}") from exc
        links = {
            "SageMaker console": CONSOLE_JOB_URL.format(
                region=self.clients.region, job=final.job_name
            ),
            "model in S3": model_uri,
        }
        metrics = dict(final.metrics) or {
            m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", [])
        }
        cost = run_cost(config, result)
        return ModelArtifacts(
            model_uri=model_uri,
            model_archive=str(archive),
            local_model_dir=model_dir,
            metrics=metrics,
            links=links,
            records=None,
            cost=cost,
        )

    # -- helpers -------------------------------------------------------------------------

    def _image(self, config: PipelineConfig) -> ResolvedImage:
        from cloudtrain.backends.aws.images import resolve_image

        region, instance_type = aws_settings(config).region, config.compute.instance_type
        key = (config.environment.model_dump_json(), region, instance_type)
        if key not in self._images:
            self._images[key] = resolve_image(
                config.environment, region=region, instance_type=instance_type
            )
        return self._images[key]

    def _channel_uris(self, config: PipelineConfig, layout: jobs.S3Layout) -> dict[str, str]:
        return {
            channel: source
            if is_uri(source)
            else f"s3://{layout.bucket}/{layout.data_key(channel)}/"
            for channel, source in config.data.items()
        }

    def _code_archive(self, config: PipelineConfig, run_id: str) -> tuple[bytes, str]:
        """The source folder packed once per run (every attempt of a run ships the same
        code), and the S3 URI its content names."""
        cache = (run_id, config.code.source_dir)
        if cache not in self._code:
            layout = jobs.S3Layout.for_config(config)
            extra = {launcher.FILE_NAME: launcher_source()} if config.secrets else None
            archive = jobs.source_archive(config.code.source_dir, extra, code_exclusions(config))
            key = layout.code_key(jobs.archive_digest(archive))
            self._code[cache] = archive, f"s3://{layout.bucket}/{key}"
        return self._code[cache]

    def _upload_code(self, config: PipelineConfig, run_id: str) -> None:
        """Upload the source archive once per content; the same code is the same key."""
        from cloudtrain.backends.aws.s3 import S3Store, parse_s3_uri

        archive, uri = self._code_archive(config, run_id)
        bucket, key = parse_s3_uri(uri)
        store = S3Store(self.clients, bucket)
        if store.head(key) is None:
            store.put_bytes(key, archive, "application/gzip")

    def _describe(self, name: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = self.clients.client("sagemaker").describe_training_job(
                TrainingJobName=name
            )
            return job
        except Exception as exc:
            if (
                missing_ok
                and error_code(exc) == "ValidationException"
                and ("Could not find" in str(exc) or "not found" in str(exc).lower())
            ):
                return None
            raise mapped(exc, f"DescribeTrainingJob {name}") from exc

    def _note_transitions(self, handle: str, job: Mapping[str, Any]) -> None:
        transitions = job.get("SecondaryStatusTransitions", [])
        seen = self._seen.get(handle, 0)
        for transition in transitions[seen:]:
            message = transition.get("StatusMessage", "")
            self._pending_lines.setdefault(handle, []).append(
                f"status {transition.get('Status')}" + (f": {message}" if message else "")
            )
        self._seen[handle] = len(transitions)

    def _cloudwatch_lines(self, handle: str) -> list[str]:
        """New lines of the job's CloudWatch streams; none yet is normal early on."""
        logs = self.clients.client("logs")
        tokens = self._log_tokens.setdefault(handle, {})
        lines: list[str] = []
        try:
            streams = logs.describe_log_streams(
                logGroupName=LOG_GROUP, logStreamNamePrefix=handle + "/"
            ).get("logStreams", [])
            for stream in streams:
                name = stream["logStreamName"]
                kwargs: dict[str, Any] = {
                    "logGroupName": LOG_GROUP,
                    "logStreamName": name,
                    "startFromHead": True,
                }
                if name in tokens:
                    kwargs["nextToken"] = tokens[name]
                page = logs.get_log_events(**kwargs)
                tokens[name] = page["nextForwardToken"]
                lines += [event["message"].rstrip("\n") for event in page.get("events", [])]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException" or is_transient(exc):
                return lines
            raise mapped(exc, f"reading the logs of {handle}") from exc
        return lines


def _environment(image: ResolvedImage, warnings: list[str]) -> ResolvedEnvironment:
    return ResolvedEnvironment(
        kind=image.kind,
        uri=image.uri,
        description=f"{image.kind} {image.name}"
        + (f" {image.version}" if image.version else "")
        + (f" ({image.processor})" if image.processor else "")
        + f": {image.uri}",
        warnings=tuple(warnings),
    )


def run_cost(config: PipelineConfig, result: TrainingResult) -> dict[str, Any] | None:
    """The run's SageMaker bill, every attempt on SageMaker included (a failover route's
    others are priced by their clouds), against on-demand prices."""
    from cloudtrain.backends.aws.pricing import PRICES_AS_OF, estimate_cost

    attempts = [a for a in result.attempts if a.cloud in ("", AwsBackend.name)]
    training = sum(a.training_seconds or 0.0 for a in attempts)
    billable = sum(
        a.billable_seconds if a.billable_seconds is not None else (a.training_seconds or 0.0)
        for a in attempts
    )
    estimate = estimate_cost(
        config.compute.instance_type, config.compute.instance_count, training, billable
    )
    if estimate is None:
        return {
            "training_seconds": training,
            "billable_seconds": billable,
            "note": f"no price for {config.compute.instance_type} (table of {PRICES_AS_OF})",
        }
    return {
        "training_seconds": training,
        "billable_seconds": billable,
        "on_demand_usd": round(estimate.on_demand_usd, 4),
        "billed_usd": round(estimate.billed_usd, 4),
        "saved_usd": round(estimate.saved_usd, 4),
        "saved_percent": round(estimate.saved_percent, 1),
        "prices_as_of": estimate.prices_as_of,
    }


def _as_datetime(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
