# medseg image for GPU (and CPU) use.
#   build:  docker build -t medseg .
#   GPU:    docker run --rm --gpus all --shm-size 8g -v /data/medseg:/data -e MEDSEG_DATA_ROOT=/data \
#             medseg fit --config configs/experiments/unet_acdc.yaml --trainer.default_root_dir=/data/runs
#   CPU:    docker run --rm -v "$PWD:/data" medseg segment /data/scan.nii.gz -o /data/out --box ... --slice K
# The PyPI torch wheel carries its own CUDA libraries; the CUDA runtime base image provides the
# matching system libraries, and the host needs the NVIDIA driver + container toolkit.
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/medseg
# dependencies first (cached layer): torch, then sam2 built against it without CUDA ops
RUN pip install --upgrade pip setuptools wheel \
    && pip install "torch>=2.5" "torchvision>=0.20" \
    && SAM2_BUILD_CUDA=0 pip install --no-build-isolation "sam2==1.1.0"
COPY pyproject.toml README.md ./
COPY medseg ./medseg
COPY kernels ./kernels
COPY data_prep ./data_prep
COPY apps ./apps
COPY configs ./configs
RUN pip install . && useradd --create-home medseg
USER medseg
# configs/ stays at /opt/medseg/configs; relative --config paths resolve from here
WORKDIR /opt/medseg
ENTRYPOINT ["medseg"]
CMD ["--help"]
