# syntax=docker/dockerfile:1
# The flow-run image for the Kubernetes and ECS work pools (prefect.yaml): the project, its
# cloud SDKs and Prefect, run as a non-root user. The flows orchestrate; training runs on
# SageMaker or Azure ML (or, for cloud: local, inside this container).
#
#   docker build -t REGISTRY/cloudtrain:0.1.0 .                  # with the examples' extras
#   docker build --build-arg EXTRAS= -t REGISTRY/cloudtrain:0.1.0 .   # the orchestrator only
#
# Two stages: the first builds a virtualenv (with a compiler at hand for any package that
# ships no wheel), the second copies only that virtualenv onto a fresh slim image, so no
# build tools are left in what runs.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The project's Prefect (prefect.yaml's prefect-version; tests/test_container_image.py
# checks both), held by a pip constraint so the install line stays the README's.
ARG PREFECT_VERSION=3.9.1
# Optional extras, comma-separated: `examples` adds scikit-learn, which the digits
# deployments' data preparation and the local cloud's sklearn scripts need. Empty: the
# orchestrator only (pipelines whose data is already in S3 or Azure and train there).
ARG EXTRAS=examples
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/tmp/constraints.txt
WORKDIR /src
COPY . .
RUN echo "prefect==${PREFECT_VERSION}" > /tmp/constraints.txt
# The README's install line, then the extras asked for (pip refuses an empty `.[]`).
RUN python -m pip install .
RUN if [ -n "${EXTRAS}" ]; then python -m pip install ".[${EXTRAS}]"; fi

FROM ${PYTHON_IMAGE} AS runtime
ARG PREFECT_VERSION=3.9.1
LABEL org.opencontainers.image.title="cloudtrain" \
      org.opencontainers.image.description="cloudtrain's Prefect flow-run image" \
      io.prefect.version="${PREFECT_VERSION}"
RUN groupadd --system --gid 10001 cloudtrain \
    && useradd --system --uid 10001 --gid cloudtrain --home-dir /home/cloudtrain \
       --create-home --shell /usr/sbin/nologin cloudtrain
COPY --from=build /opt/venv /opt/venv
# The checkout the deployments' pull step sets as the working directory: the flows'
# entrypoints (flows/*.py) and the examples are read from it. Code stays root's; only the
# folders a run writes (generated data, work_dir) belong to the runtime user.
WORKDIR /opt/cloudtrain
COPY . .
RUN mkdir -p examples/digits/data examples/digits/.cloudtrain examples/smoke/.cloudtrain \
    && chown -R cloudtrain:cloudtrain examples/digits/data examples/digits/.cloudtrain \
       examples/smoke/.cloudtrain
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PREFECT_HOME=/home/cloudtrain/.prefect
USER 10001:10001
CMD ["prefect", "version"]
