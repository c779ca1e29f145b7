#!/usr/bin/env bash
# Two CPU ranks on this machine through a hostfile (no ssh server needed): the curriculum under ZeRO-3.
set -euo pipefail
cd "$(dirname "$0")/.."
hostfile="$(mktemp)"
trap 'rm -f "$hostfile"' EXIT
echo "localhost slots=2" > "$hostfile"
DS_ACCELERATOR=cpu exec launch/train.sh -H "$hostfile" --no-ssh-check -a 127.0.0.1 \
  tiny-curriculum train.zero_stage=3 "$@"
