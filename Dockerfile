# medseg CPU/GPU image. The standard PyPI torch wheel runs on CPU and, with the NVIDIA container
# runtime, on GPU. Build:  docker build -t medseg .
# Run:    docker run --rm -v "$PWD:/data" medseg segment /data/scan.nii.gz -o /data/out --box ... --slice K
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False

RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/medseg
# dependencies first (cached layer): torch, then sam2 built against it without CUDA ops
RUN pip install "torch>=2.5" "torchvision>=0.20" setuptools wheel \
    && SAM2_BUILD_CUDA=0 pip install --no-build-isolation "sam2==1.1.0"
COPY pyproject.toml README.md ./
COPY medseg ./medseg
COPY kernels ./kernels
COPY data_prep ./data_prep
COPY apps ./apps
COPY configs ./configs
RUN pip install . && useradd --create-home medseg
USER medseg
WORKDIR /data
ENTRYPOINT ["medseg"]
CMD ["--help"]
