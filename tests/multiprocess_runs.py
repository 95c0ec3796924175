"""Test helper (not a test): run ``cfsrdelta_arch/train.py`` as multi-process trainings on this CPU.

``python tests/multiprocess_runs.py <plan.json>``; the plan is ``{"root": <repository root>, "waves":
[[run, ...], ...]}``, each run ``{"name", "opt", "args", "world_size", "out"}``. The runs of a wave
start together, the next wave when they have all ended. A run of ``world_size`` N > 1 is what
``torchrun --nproc_per_node=N cfsrdelta_arch/train.py -opt <opt> --launcher pytorch <args>`` starts:
N processes with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) on
a free port; N = 1 is a plain single-process run. The processes are forked from this one after it has
imported the package once (a fresh interpreter per process costs ~15 s of imports on 2 cores).

Each process (rank r) writes into ``out``:
- ``rank<r>.out`` / ``rank<r>.err``: its stdout and stderr;
- ``rank<r>_<iter>.pth``: its whole network's state dict each time the model saves (iter -1: the end),
  taken by a hook around ``TTASRModel.save``;
- ``rank<r>_writes.json``: every file-system change it made under ``experiments/<name>`` and
  ``tb_logger/<name>`` (file opened for writing, rename, removal, new folder), from an audit hook;
- ``rank<r>.code``: its exit status.
"""
import json
import multiprocessing
import os
import random
import socket
import sys

import torch

import cfsrdelta_arch  # noqa: F401  (imported once, before forking)
from cfsrdelta_arch.app.options import run_cli
from cfsrdelta_arch.models.ttasr_model import TTASRModel
from cfsrdelta_arch.train import train

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGES = {'os.rename', 'os.remove', 'os.rmdir', 'os.mkdir', 'os.truncate', 'shutil.copyfile', 'shutil.rmtree'}


def free_port(taken=()):
    """A free TCP port below the ephemeral range and not in ``taken``: the OS takes ephemeral ports for
    the gloo connections of concurrent runs, and one could take an ephemeral port picked here before
    rank 0 listens on it."""
    with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
        ephemeral = int(f.read().split()[0])
    while True:
        port = random.randrange(max(1024, ephemeral - 10_000), ephemeral)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                continue
        return port


def record_writes(watched, writes):
    """Audit hook appending (event, path) to ``writes`` for every change below a ``watched`` folder."""
    def hook(event, args):
        if event == 'open':
            path, mode, flags = args
            writing = any(c in mode for c in 'wax+') if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
            paths = [path] if writing else []
        elif event in CHANGES:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        for path in paths:
            path = os.path.abspath(os.fsdecode(path)) if not isinstance(path, int) else ''
            if path.startswith(watched):
                writes.append((event, path))
    sys.addaudithook(hook)


def rank_process(root, run, rank, port):
    out = run['out']
    for fd, name in ((1, f'rank{rank}.out'), (2, f'rank{rank}.err')):
        f = open(os.path.join(out, name), 'w')
        os.dup2(f.fileno(), fd)
    if run['world_size'] > 1:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(run['world_size']),
                          MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    writes = []
    watched = tuple(os.path.join(root, top, run['name']) for top in ('experiments', 'tb_logger'))
    save = TTASRModel.save

    def save_and_dump(model, epoch, current_iter):
        save(model, epoch, current_iter)
        torch.save(model.get_bare_model(model.net_g).state_dict(), os.path.join(out, f'rank{rank}_{current_iter}.pth'))

    TTASRModel.save = save_and_dump
    record_writes(watched, writes)
    launcher = ['--launcher', 'pytorch'] if run['world_size'] > 1 else []
    sys.argv = [os.path.join(root, 'cfsrdelta_arch', 'train.py'), '-opt', run['opt'], *launcher, *run['args']]
    code = 1  # until the run ends normally or with an exit status (an exception: 1 and its traceback)
    try:
        run_cli(train, root)
        code = 0
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else 1
        if isinstance(end.code, str):
            print(end.code, file=sys.stderr)
    finally:
        with open(os.path.join(out, f'rank{rank}_writes.json'), 'w') as f:
            json.dump(writes, f)
        with open(os.path.join(out, f'rank{rank}.code'), 'w') as f:
            f.write(str(code))
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def main_plan(plan_path):
    with open(plan_path) as f:
        plan = json.load(f)
    torch.set_num_threads(1)  # many processes on few cores
    fork = multiprocessing.get_context('fork')
    for wave in plan['waves']:
        procs, ports = [], []
        for run in wave:
            os.makedirs(run['out'], exist_ok=True)
            port = free_port(ports)
            ports.append(port)
            procs += [fork.Process(target=rank_process, args=(plan['root'], run, rank, port))
                      for rank in range(run['world_size'])]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()


if __name__ == '__main__':
    main_plan(sys.argv[1])
