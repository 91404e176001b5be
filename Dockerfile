# The training image for GPU clusters: `python -m pipeline.train` with the project installed by the same
# scripts/install.sh as the README and CI (without the dev extra).
#   docker build -t alexnet-pipeline .
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 -t alexnet-pipeline .
#   docker run --gpus all --ipc=host -v "$PWD/data:/data" -v "$PWD/runs:/workspace" alexnet-pipeline \
#       data.root=/data/shards trainer=ddp trainer.devices=8
# Under Slurm: enroot/pyxis or apptainer, see docs/cluster.md. The torch wheels bring their own CUDA libraries;
# the base image supplies the driver-facing runtime and must suit the cluster's driver.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# Unpinned on purpose: the versions are the base image's distribution's, which the BASE_IMAGE arg selects.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates git libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# A non-root user; the uid is arbitrary (apptainer and pyxis run as the calling cluster user anyway).
ARG USER_UID=10001
RUN useradd --create-home --uid "${USER_UID}" --shell /bin/bash alexnet \
    && mkdir -p /workspace \
    && chown alexnet:alexnet /workspace

WORKDIR /opt/alexnet-pipeline
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY data_prep/ data_prep/
COPY pipeline/ pipeline/
COPY conf/ conf/
RUN INSTALL_EXTRAS="" PYTHON=python3 scripts/install.sh /opt/venv \
    && rm -rf /root/.cache/pip

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
USER ${USER_UID}
# Hydra outputs, checkpoints and the default MLflow store (mlflow.db) go to the working directory: mount it.
WORKDIR /workspace
ENTRYPOINT ["python", "-m", "pipeline.train"]
