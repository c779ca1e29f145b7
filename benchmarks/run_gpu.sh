#!/usr/bin/env bash
# The GPU tier in one go, for a lent or cluster GPU: the device, the `gpu` tests, kernels_cuda.json and
# step_cuda_simulated.json (Qwen2.5-1.5B-shaped frozen LLM, bf16, ZeRO-2, text-only stage, sequence ~256).
#   bash benchmarks/run_gpu.sh [OUT_DIR]            (default benchmarks/results; logs beside the results)
# PARTS (default "env step kernels tests") picks and orders the parts; STEP_ARGS / KERNEL_ARGS add options, e.g.
# STEP_ARGS="--override model.llm.compile=true --override data.num_workers=4".
# Each part has its own time limit so that one hang cannot take the others with it.
set -u
out=${1:-benchmarks/results}
mkdir -p "$out"
export DS_ACCELERATOR=cuda PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 OMP_NUM_THREADS=8
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
for part in ${PARTS:-env step kernels tests}; do
  echo "== $part $(date +%T)"
  case $part in
    env)
      { nvidia-smi; python3 -c "import torch, triton, deepspeed, transformers; print('torch', torch.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'triton', triton.__version__, 'deepspeed',
deepspeed.__version__, 'transformers', transformers.__version__)"; } 2>&1 | tee "$out/gpu_env.log" ;;
    step)
      # shellcheck disable=SC2086
      timeout -k 10 "${STEP_TIMEOUT:-300}" python3 benchmarks/bench_step.py --mode simulated --device cuda \
        --llm-config benchmarks/configs/qwen2.5-1.5b.json --precision bf16 --zero-stage 2 \
        --sentences-per-utterance 9 --threads 8 --steps 20 --warmup 3 --baseline-steps 5 --batch 48 --profile-steps 3 \
        --out "$out/step_cuda_simulated.json" ${STEP_ARGS:-} 2>&1 | tee "$out/bench_step.log" ;;
    kernels)
      # shellcheck disable=SC2086
      timeout -k 10 "${KERNELS_TIMEOUT:-420}" python3 benchmarks/bench_kernels.py --device cuda --threads 8 \
        --out "$out/kernels_cuda.json" ${KERNEL_ARGS:-} 2>&1 | tee "$out/bench_kernels.log" ;;
    tests)
      per_test=$(python3 -c 'import pytest_timeout' 2>/dev/null && echo --timeout=100)
      # shellcheck disable=SC2086
      timeout -k 10 "${TESTS_TIMEOUT:-240}" python3 -m pytest -q -m gpu tests/test_kernels_cuda.py -p no:cacheprovider \
        --durations=0 $per_test \
        2>&1 | tee "$out/gpu_tests.log" ;;
    *) echo "unknown part '$part' (env step kernels tests)" >&2; exit 2 ;;
  esac
done
