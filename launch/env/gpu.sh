# shellcheck shell=bash
# Backend environment for NVIDIA GPUs (sourced by launch/train.sh -e launch/env/gpu.sh).
export DS_ACCELERATOR=cuda
export NCCL_ASYNC_ERROR_HANDLING="${NCCL_ASYNC_ERROR_HANDLING:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
