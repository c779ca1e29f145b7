# shellcheck shell=bash
# Backend environment for Huawei Ascend 910B (sourced by launch/train.sh -e launch/env/npu.sh).
# NOT verified on Ascend hardware: written against the CANN / torch_npu documentation.
CANN_HOME="${CANN_HOME:-/usr/local/Ascend/ascend-toolkit}"
if [ -f "$CANN_HOME/set_env.sh" ]; then
  # shellcheck disable=SC1091
  source "$CANN_HOME/set_env.sh"
else
  echo "launch/env/npu.sh: CANN set_env.sh not found under $CANN_HOME (set CANN_HOME)" >&2
fi
export DS_ACCELERATOR=npu
export ASCEND_RT_VISIBLE_DEVICES="${ASCEND_RT_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}"
export HCCL_CONNECT_TIMEOUT="${HCCL_CONNECT_TIMEOUT:-1200}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
