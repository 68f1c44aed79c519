#!/bin/bash
# One pss run on several GPU nodes with Slurm + torchrun (DDP over nccl), e.g. 2 nodes x 4 GPUs:
#
#   sbatch --nodes 2 --gpus-per-node 4 scripts/slurm_torchrun.sh -w /shared/pss-workspace -c paper \
#       --method pss --user id1 --init-from NO_DA_RUN
#
# Arguments after the script are `pss train` arguments. Requirements (README "Running on a cluster"):
# * the workspace (data/, runs/, cache/) lies on a filesystem every node mounts at the same path: rank 0 writes
#   the run, every rank reads the data and, on --resume, the checkpoint;
# * pss is installed in the same environment on every node (PSS_PYTHON below, default: python3 on PATH);
# * train.batch_size is the GLOBAL batch: it must be a multiple of nodes x GPUs per node (each GPU trains
#   batch_size / world images; the group context sees those, as the released code's DataParallel replicas did).
#   Add --set train.sync_bn=true for BatchNorm statistics over the global batch.
#
# Resume a stopped run (time limit, preemption) the same way with `-w WS --resume RUN` as the arguments: every rank
# loads its last checkpoint (with the same number of GPUs the result equals an uninterrupted run).
#SBATCH --job-name=pss-ddp
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=pss-ddp-%j.log
set -euo pipefail

PSS_PYTHON=${PSS_PYTHON:-python3}
GPUS_PER_NODE=${SLURM_GPUS_PER_NODE:-${GPUS_PER_NODE:-1}}
GPUS_PER_NODE=${GPUS_PER_NODE##*:}  # "--gpus-per-node h100:4" gives "h100:4"
# the first node of the allocation hosts the rendezvous (torchrun's c10d store)
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PSS_RDZV_PORT:-29500}
# one torchrun per node (srun --ntasks-per-node=1), each starting GPUS_PER_NODE ranks
srun "$PSS_PYTHON" -m torch.distributed.run \
    --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" \
    -m pss train --device cuda "$@"
