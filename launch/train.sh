#!/usr/bin/env bash
# Launch `tasu train` through the DeepSpeed runner on one or many nodes.
#
#   launch/train.sh [options] CONFIG [key=value ...]
#     -H, --hostfile FILE      hostfile ("host slots=N" per line); default: single node
#     -g, --gpus N             processes per node when no hostfile (default: 1)
#     -n, --nodes N            use the first N hosts of the hostfile
#     -a, --master-addr ADDR   rendezvous address (default: first host / 127.0.0.1)
#     -p, --master-port PORT   rendezvous port (default: 29500)
#     -i, --include SPEC       deepspeed --include (e.g. "node1:0,1")
#     -x, --exclude SPEC       deepspeed --exclude
#     --node-rank R            run only this node's ranks, without ssh (multi-node without an ssh server)
#     --no-ssh-check           single-host hostfile runs where no ssh server exists
#     -e, --env FILE           source a backend env file first (launch/env/gpu.sh, launch/env/npu.sh)
# Example: launch/train.sh -H launch/hostfile.example -e launch/env/gpu.sh tiny-curriculum output_dir=runs/tc
set -euo pipefail

hostfile="" gpus=1 nodes="" addr="" port=29500 include="" exclude="" node_rank="" ssh_check=1 envfile=""
while [ $# -gt 0 ]; do
  case "$1" in
    -H|--hostfile) hostfile="$2"; shift 2 ;;
    -g|--gpus) gpus="$2"; shift 2 ;;
    -n|--nodes) nodes="$2"; shift 2 ;;
    -a|--master-addr) addr="$2"; shift 2 ;;
    -p|--master-port) port="$2"; shift 2 ;;
    -i|--include) include="$2"; shift 2 ;;
    -x|--exclude) exclude="$2"; shift 2 ;;
    --node-rank) node_rank="$2"; shift 2 ;;
    --no-ssh-check) ssh_check=0; shift ;;
    -e|--env) envfile="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) echo "launch/train.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then echo "launch/train.sh: missing CONFIG (see --help)" >&2; exit 2; fi
if [ -n "$envfile" ]; then
  if [ ! -f "$envfile" ]; then echo "launch/train.sh: env file not found: $envfile" >&2; exit 2; fi
  # shellcheck disable=SC1090
  source "$envfile"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

args=()
if [ -n "$hostfile" ]; then
  if [ ! -f "$hostfile" ]; then echo "launch/train.sh: hostfile not found: $hostfile" >&2; exit 2; fi
  args+=(--hostfile "$hostfile")
  [ -n "$nodes" ] && args+=(--num_nodes "$nodes")
  [ -z "$addr" ] && addr="$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$hostfile")"
else
  args+=(--num_gpus "$gpus")
  [ -z "$addr" ] && addr="127.0.0.1"
fi
args+=(--master_addr "$addr" --master_port "$port")
[ -n "$include" ] && args+=(--include "$include")
[ -n "$exclude" ] && args+=(--exclude "$exclude")
[ "$ssh_check" = 0 ] && args+=(--no_ssh_check)
[ -n "$node_rank" ] && args+=(--no_ssh --node_rank "$node_rank")

exec deepspeed "${args[@]}" --module tasu train "$@"
