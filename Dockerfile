# tasu on NVIDIA GPUs. Build: docker build -t tasu:cuda .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-dev git \
        libsndfile1 sox flite espeak-ng && rm -rf /var/lib/apt/lists/*
RUN python3 -m pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu128
WORKDIR /opt/tasu
COPY setup.py pyproject.toml README.md ./
COPY tasu ./tasu
COPY ds_configs ./ds_configs
COPY launch ./launch
RUN python3 -m pip install "deepspeed==0.19.8" "transformers==5.23.0" "peft==0.21.2" ".[triton]"
ENV DS_ACCELERATOR=cuda
ENTRYPOINT ["tasu"]
