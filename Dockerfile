# The training image for GPU clusters: `python -m pipeline.train` with the project installed by the same
# scripts/install.sh as the README and CI (every dependency at the exact version and hash of requirements.lock).
#   docker build -t alexnet-pipeline .
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 -t alexnet-pipeline .
#   docker run --gpus all --ipc=host -v "$PWD/data:/data" -v "$PWD/runs:/workspace" alexnet-pipeline \
#       data.root=/data/shards trainer=ddp trainer.devices=8
# Under Slurm: enroot/pyxis or apptainer, see docs/cluster.md. The torch wheels bring their own CUDA libraries;
# the base image supplies the driver-facing runtime and must suit the cluster's driver.
# Without a registry: scripts/container.sh builds it with podman on a Debian base made by debootstrap.
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
# The dependencies (torch and its CUDA libraries: 6.6 GB), at the exact versions and hashes of requirements.lock,
# in a layer of their own, which only the lock, pyproject.toml and the two scripts invalidate: editing the code
# rebuilds the small layers below.
# PIP_CONFIG_FILE: a pip configuration for the build only (a local wheelhouse or index, constraints, a CA
# bundle), mounted with `podman build --volume` as scripts/container.sh does; it is not kept in the image.
# DEPS_INPUTS: a digest of what that configuration makes pip see; a new value rebuilds the dependency layer.
ARG PIP_CONFIG_FILE
ARG DEPS_INPUTS=""
COPY pyproject.toml requirements.lock ./
COPY scripts/install.sh scripts/lock.py scripts/
RUN INSTALL_ONLY_DEPS=1 PYTHON=python3 scripts/install.sh /opt/venv \
    && rm -rf /root/.cache/pip

COPY README.md ./
COPY scripts/ scripts/
COPY alexnet_common/ alexnet_common/
COPY data_prep/ data_prep/
COPY pipeline/ pipeline/
COPY conf/ conf/
# The image is for GPUs and carries no C++ compiler: the fused CPU LRN kernel is not built, and LRN on a CPU
# runs as torch ops (pipeline/models/lrn_kernel.py).
ENV ALEXNET_FUSED_LRN=0
RUN PYTHON=python3 scripts/install.sh /opt/venv \
    && rm -rf /root/.cache/pip

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
USER ${USER_UID}
# Hydra outputs, checkpoints and the default MLflow store (mlflow.db) go to the working directory: mount it.
WORKDIR /workspace
ENTRYPOINT ["python", "-m", "pipeline.train"]
