#!/usr/bin/env bash
# Wheels for a GPU host that cannot reach a package registry (the lent H100 / H200 machines: Python 3.12 with
# torch, triton, transformers, peft, sentencepiece, safetensors already installed; deepspeed, webdataset, jiwer,
# soundfile and what they need missing). Run here, then carry the folder to the host:
#   bash benchmarks/gpu_wheels.sh [DIR]          (default .whl, git-ignored)
#   on the host:  python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl
#                 PYTHONPATH=/tmp/site:$PWD TASU_SOURCE_COMMIT=<commit> bash benchmarks/run_gpu.sh "$OUT"
# Versions: the ones this project is tested with (pydantic and pydantic_core must match each other).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
mkdir -p "$dir"
python3 -m pip wheel -q --no-deps deepspeed==0.19.8 -w "$dir"          # pure Python: its ops JIT-compile there
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform any)
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do plat+=(--platform "${p}_x86_64"); done
python3 -m pip download -q --no-deps "${plat[@]}" -d "$dir" \
  hjson==3.1.0 pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  webdataset==1.0.2 braceexpand==0.1.7 jiwer==4.0.0 rapidfuzz==3.14.6 soundfile==0.14.0 cffi==2.0.0 pycparser==3.0
ls "$dir"/*.whl
