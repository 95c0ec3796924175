"""Multi-process training with BasicSR's launchers, on CPUs (gloo) as well as GPUs (NCCL).

BasicSR 1.4.2's ``init_dist`` assumes CUDA: it calls ``torch.cuda.set_device(rank % device_count)``
(a ZeroDivisionError without GPUs) and always uses NCCL. :func:`init_dist` replaces it: once
``cfsrdelta_arch`` is imported, BasicSR's ``parse_options`` calls it for ``--launcher pytorch``
(torchrun) and ``--launcher slurm``, through ``cfsrdelta_arch.app.options.start_distributed``, which
reads ``num_gpu`` from the option file. The rest of
the distributed behaviour lives where it belongs: the model (``TTASRModel``: DDP without device ids on
the CPU, losses averaged over all processes, validation and its best/early-stop decision on rank 0 then
shared, every rank's RNG state in the training state) and the resume logic (``app/resume.py``:
rank 0 picks the state to resume from).
"""
import os
import subprocess

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# The environment torchrun sets for each process; the slurm launcher derives it from SLURM_*.
TORCHRUN_VARIABLES = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
SLURM_VARIABLES = ('SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_NTASKS', 'SLURM_NODELIST')
DEFAULT_MASTER_PORT = 29500  # torch.distributed's default, as BasicSR's slurm launcher uses


class DistributedSetupError(RuntimeError):
    """A launcher started without the environment it needs; the message is one line."""


def uses_cuda(num_gpu):
    """Whether a run with option ``num_gpu`` (an int or 'auto') trains on GPUs on this machine; otherwise
    it runs on the CPU (TTASRModel falls back to ``num_gpu: 0`` without CUDA)."""
    return num_gpu != 0 and torch.cuda.is_available()


def _require(names, launcher):
    missing = [name for name in names if name not in os.environ]
    if missing:
        hint = ('start it with torchrun --nproc_per_node=N' if launcher == 'pytorch'
                else 'start it with srun inside a slurm allocation')
        raise DistributedSetupError(f"--launcher {launcher} needs {', '.join(missing)} in the environment: {hint} "
                                    '(see README, "Multi-process training")')


def init_dist(launcher, use_cuda, backend=None, port=None):
    """Join the process group of a multi-process run: gloo on the CPU, NCCL with ``use_cuda``.

    Args:
        launcher (str): 'pytorch' (torchrun has set RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
            or 'slurm' (srun has set SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NODELIST; the master
            is the first node of the allocation, its port ``port``, else $MASTER_PORT, else 29500, as
            in BasicSR).
        use_cuda (bool): train on GPUs: each process takes GPU ``LOCAL_RANK % device_count``.
        backend (str | None): slurm only, from ``dist_params: {backend: ...}`` (BasicSR's option
            templates name 'nccl'); None: NCCL with ``use_cuda``, else gloo.
        port (int | None): slurm only, from the option file's ``dist_params: {port: P}``.

    Raises:
        DistributedSetupError: the launcher's environment variables are missing, or NCCL without CUDA.
    """
    if launcher == 'slurm':
        _require(SLURM_VARIABLES, launcher)
        node_list = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ['MASTER_PORT'] = str(port or os.environ.get('MASTER_PORT', DEFAULT_MASTER_PORT))
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ['SLURM_LOCALID']
    _require(TORCHRUN_VARIABLES, launcher)
    if backend == 'nccl' and not use_cuda:
        raise DistributedSetupError('dist_params.backend is nccl but this run trains on the CPU (num_gpu: 0 or no '
                                    'CUDA): remove it (gloo is chosen) or set gloo')
    if use_cuda:
        # CUDA cannot be used in forked DataLoader workers (BasicSR sets the same).
        if mp.get_start_method(allow_none=True) is None:
            mp.set_start_method('spawn')
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']) % torch.cuda.device_count())
    dist.init_process_group(backend=backend or ('nccl' if use_cuda else 'gloo'))


def end_process_group():
    """Leave the process group, if this process joined one (torch warns at exit otherwise)."""
    if dist.is_initialized():
        dist.destroy_process_group()
