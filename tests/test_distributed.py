"""Multi-process training on the CPU (gloo): real ``cfsrdelta_arch/train.py`` runs with 2 processes.

The processes get torchrun's environment and ``--launcher pytorch`` (tests/multiprocess_runs.py forks
them from one interpreter, which imports the package once). Tiny BackboneDelta runs (tiny CFSR
backbone, LRRefineNet width 8, 4 generated 32x32 images), in two waves:

- ``plain``: 2 x batch 2 with random crops (16 of 32 pixels), flips and rotations, saving and
  validating every 2 iterations; early stopping with ``min_delta: 100`` dB makes the first
  validation the best and stops the run at its second one, iteration STOP_ITER, on both ranks;
- ``split``: the same run ended at iteration 2 (``total_iter: 2``), then ``--auto_resume``d with
  ``--force_yml train:total_iter=...`` by 2 processes (wave 2): it must reach STOP_ITER with the
  weights of ``plain`` bit for bit (each rank's RNG state is saved and restored, and its data
  position);
- ``two_by_two`` / ``one_by_four``: 2 processes x batch 2 against 1 process x batch 4 without
  augmentation (whole 32x32 images, no flips), one epoch = all 4 images = one iteration. Both
  iterations see the same 4 samples, so the averaged gradient is the same mean over the same
  samples: the weights after 2 Adam steps agree up to float summation order. Adam's ``eps: 1``
  makes the step proportional to the gradient (with the default eps the first step is about
  lr * sign(gradient), which rounding noise can flip for gradients near zero);
- ``fixed``: ``two_by_two`` with ``train.fixed_refiner_params: [body.0]``: the parameters are frozen
  before DDP wraps the network (DDP waits for the gradient of every parameter that required one when
  it was wrapped, so freezing later would stop the second iteration);
- ``planted``: ``--auto_resume`` meets a planted malicious training state: refused once, by rank 0,
  and both ranks end with status 1;
- ``nan``: TTASRModel training a tiny CFSR with an absurd learning rate, DDP over the whole network:
  both ranks stop at the non-finite loss of iteration 2 with status 1, after one error line.

In every run only rank 0 writes under experiments/<name> (an audit hook records every change each
process makes there) and logs; the ranks hold identical weights at every save.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import yaml

from cfsrdelta_arch.app.distributed import TORCHRUN_VARIABLES, DistributedSetupError, end_process_group, init_dist
from conftest import ROOT, TINY_CFSR, write_tiny_dataset
from multiprocess_runs import free_port
from test_faults_training import PlantedPickle
from test_pipelines import SCALE, train_options

VAL_FREQ = 2
STOP_ITER = 2 * VAL_FREQ  # the first validation is the best, the second one exhausts patience 1
TOTAL_ITER = 10  # never reached: early stopping ends plain and split first
RANKS = (0, 1)
HELPER = os.path.join(os.path.dirname(__file__), 'multiprocess_runs.py')


def options(data, backbone, **train):
    """Train options of the tiny BackboneDelta (named later); ``train`` updates the train dataset's."""
    opt = train_options(None, data, backbone, total_iter=TOTAL_ITER,
                        val_extra={'val_freq': VAL_FREQ, 'early_stopping': {'patience': 1, 'min_delta': 100.0}})
    opt['datasets']['train'].update({'gt_size': 16, 'dataset_enlarge_ratio': 4, **train})
    opt['logger']['save_checkpoint_freq'] = VAL_FREQ
    return opt


def exact_options(data, backbone, batch):
    """No augmentation, one epoch = one iteration of all 4 images; Adam with eps 1 (see the module doc)."""
    opt = options(data, backbone, gt_size=32, use_hflip=False, use_rot=False, dataset_enlarge_ratio=1,
                  batch_size_per_gpu=batch)
    opt['train'].update(total_iter=2)
    opt['train']['optim_g'].update(lr=0.1, eps=1.0)
    opt['val'].pop('early_stopping')
    opt['logger']['save_checkpoint_freq'] = 1
    return opt


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def same_tensors(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def exp_dir(name):
    return os.path.join(ROOT, 'experiments', name)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Run every case; returns {case: run description} (names, output folders)."""
    tmp = tmp_path_factory.mktemp('ddp')
    tag = f'pytest_ddp_{tmp.name}'.replace('-', '_')
    data = write_tiny_dataset(str(tmp / 'data'), SCALE, n=4, size=32)
    torch.manual_seed(0)
    backbone = str(tmp / 'backbone.pth')
    from cfsrdelta_arch.archs.cfsr_arch import CFSR
    torch.save({'params': CFSR(embed_dim=8, depths=(1,), upscale=SCALE).state_dict()}, backbone)

    split = options(data, backbone)
    split['train']['total_iter'] = VAL_FREQ
    fixed = exact_options(data, backbone, batch=2)
    fixed['train']['fixed_refiner_params'] = ['body.0']
    nan = options(data, backbone)
    nan.update(model_type='TTASRModel', network_g=dict(TINY_CFSR))
    nan['train']['optim_g']['lr'] = 1e30
    nan['val']['val_freq'] = nan['logger']['save_checkpoint_freq'] = 1
    # case: (options, processes, extra arguments, experiment); 'resumed' continues 'split' in place.
    cases = {
        'planted': (options(data, backbone), 2, ['--auto_resume'], 'planted'),
        'plain': (options(data, backbone), 2, [], 'plain'),
        'split': (split, 2, [], 'split'),
        'two_by_two': (exact_options(data, backbone, batch=2), 2, [], 'two_by_two'),
        'one_by_four': (exact_options(data, backbone, batch=4), 1, [], 'one_by_four'),
        'fixed': (fixed, 2, [], 'fixed'),
        'nan': (nan, 2, [], 'nan'),
        'resumed': (None, 2, ['--auto_resume', '--force_yml', f'train:total_iter={TOTAL_ITER}'], 'split'),
    }
    described = {}
    for case, (opt, world_size, args, experiment) in cases.items():
        name, opt_path = f'{tag}_{experiment}', str(tmp / f'{experiment}.yml')
        if opt is not None:
            with open(opt_path, 'w') as f:
                yaml.safe_dump(dict(opt, name=name), f, sort_keys=False)
        described[case] = {'name': name, 'opt': opt_path, 'args': args, 'world_size': world_size,
                           'out': str(tmp / case)}
        shutil.rmtree(exp_dir(name), ignore_errors=True)  # a crashed earlier session's leftovers
    marker = tmp / 'PLANTED_PICKLE_RAN'
    described['planted']['marker'] = str(marker)
    planted = os.path.join(exp_dir(described['planted']['name']), 'training_states', f'{VAL_FREQ}.state')
    os.makedirs(os.path.dirname(planted))
    torch.save({'epoch': 0, 'iter': VAL_FREQ, 'optimizers': [PlantedPickle(marker)]}, planted)
    plan = {'root': ROOT, 'waves': [[described[c] for c in cases if c != 'resumed'], [described['resumed']]]}
    plan_path = tmp / 'plan.json'
    plan_path.write_text(json.dumps(plan))
    try:
        proc = subprocess.Popen([sys.executable, HELPER, str(plan_path)], cwd=ROOT,
                                env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=True)
        try:
            proc.wait(timeout=300)  # a rank left waiting for the others would hang: fail instead
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the helper and every rank it forked
            raise
        assert proc.returncode == 0
        yield described
    finally:
        for run in described.values():
            shutil.rmtree(exp_dir(run['name']), ignore_errors=True)


def rank_file(run, rank, what):
    return os.path.join(run['out'], f'rank{rank}{what}')


def exit_codes(run):
    return [int(open(rank_file(run, r, '.code')).read()) for r in range(run['world_size'])]


def dumps(run, rank):
    """{iter: whole network state dict} that rank ``rank`` held at each save."""
    found = glob.glob(rank_file(run, rank, '_*.pth'))
    return {int(p[len(rank_file(run, rank, '_')):-len('.pth')]): load(p) for p in found}


def output(run, rank):
    return open(rank_file(run, rank, '.out')).read() + open(rank_file(run, rank, '.err')).read()


def test_all_ranks_stop_early_together_with_identical_weights(runs):
    for case in ('plain', 'split', 'resumed', 'two_by_two', 'one_by_four'):
        assert exit_codes(runs[case]) == [0] * runs[case]['world_size'], output(runs[case], 0)[-3000:]
    plain = runs['plain']
    states = sorted(os.listdir(os.path.join(exp_dir(plain['name']), 'training_states')))
    assert states == [f'{VAL_FREQ}.state', f'{STOP_ITER}.state']  # stopped at STOP_ITER on both ranks (else: hang)
    rank0, rank1 = dumps(plain, 0), dumps(plain, 1)
    assert sorted(rank0) == sorted(rank1) == [VAL_FREQ, STOP_ITER]
    for it in rank0:
        assert same_tensors(rank0[it], rank1[it]), it
    assert not same_tensors(rank0[VAL_FREQ], rank0[STOP_ITER])  # training moved the refiner
    saved = load(os.path.join(exp_dir(plain['name']), 'models', f'net_g_{STOP_ITER}.pth'))['params']
    assert same_tensors(saved, {k[len('refiner.'):]: v for k, v in rank0[STOP_ITER].items()
                                if k.startswith('refiner.')})
    for case in ('two_by_two', 'nan'):
        rank0, rank1 = dumps(runs[case], 0), dumps(runs[case], 1)
        assert rank0 and sorted(rank0) == sorted(rank1)
        assert all(same_tensors(rank0[it], rank1[it]) for it in rank0)


def test_only_rank_0_writes_and_logs(runs):
    for case, run in runs.items():
        writes = [json.load(open(rank_file(run, r, '_writes.json'))) for r in range(run['world_size'])]
        if case != 'planted':  # refused before anything is written
            assert any(event == 'os.rename' and path.endswith('.state') for event, path in writes[0]), case
        assert all(changes == [] for changes in writes[1:]), (case, writes[1:])
    plain = runs['plain']
    logs = glob.glob(os.path.join(exp_dir(plain['name']), '*.log'))
    assert len(logs) == 1
    for text in (open(logs[0]).read(), output(plain, 0)):
        assert text.count('Validation tiny_val') == 2
        assert text.count('Saving models and training states.') == 2
        assert text.count(' early stop at iter ') == 1
    assert output(plain, 1) == ''  # rank 1 is silent: no log line, warning or print appears twice
    best = json.load(open(os.path.join(exp_dir(plain['name']), 'best.json')))
    assert best['iter'] == VAL_FREQ


def test_resume_with_two_processes_continues_exactly(runs):
    plain, resumed = runs['plain'], runs['resumed']
    assert (sorted(os.listdir(os.path.join(exp_dir(resumed['name']), 'training_states')))
            == [f'{VAL_FREQ}.state', f'{STOP_ITER}.state'])
    assert f'Resuming training from epoch: 0, iter: {VAL_FREQ}.' in output(resumed, 0)
    for rank in RANKS:
        assert sorted(dumps(resumed, rank)) == [STOP_ITER]  # the resumed run saved only STOP_ITER
        assert same_tensors(dumps(resumed, rank)[STOP_ITER], dumps(plain, rank)[STOP_ITER]), rank
    for label in (STOP_ITER, 'best'):
        path = os.path.join('models', f'net_g_{label}.pth')
        assert same_tensors(load(os.path.join(exp_dir(resumed['name']), path))['params'],
                            load(os.path.join(exp_dir(plain['name']), path))['params'])
    assert (json.load(open(os.path.join(exp_dir(resumed['name']), 'best.json')))
            == json.load(open(os.path.join(exp_dir(plain['name']), 'best.json'))))


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    two, one = dumps(runs['two_by_two'], 0), dumps(runs['one_by_four'], 0)
    assert sorted(two) == sorted(one) == [-1, 1, 2]  # -1: the end of the run
    difference = max((two[2][k] - one[2][k]).abs().max().item() for k in one[2])
    step = max((one[2][k] - one[1][k]).abs().max().item() for k in one[2])
    assert difference < 1e-6 and step > 1e-3, (difference, step)
    records = [json.load(open(os.path.join(exp_dir(runs[case]['name']), 'best.json')))
               for case in ('two_by_two', 'one_by_four')]
    assert records[0]['iter'] == records[1]['iter'] == 2
    assert abs(records[0]['value'] - records[1]['value']) < 1e-4, records


def test_fixed_refiner_params_train_the_rest_on_every_rank(runs):
    run = runs['fixed']
    assert exit_codes(run) == [0, 0], output(run, 0)[-3000:]
    rank0, rank1 = dumps(run, 0), dumps(run, 1)
    assert sorted(rank0) == sorted(rank1) == [-1, 1, 2]
    assert all(same_tensors(rank0[it], rank1[it]) for it in rank0)
    refiner = sorted(k for k in rank0[2] if k.startswith('refiner.'))
    kept = [k for k in refiner if k.startswith('refiner.body.0.')]
    assert kept and all(torch.equal(rank0[1][k], rank0[2][k]) for k in kept)
    assert all(not torch.equal(rank0[1][k], rank0[2][k]) for k in refiner if k not in kept)


def test_refused_training_state_ends_every_rank_with_one_line(runs):
    planted = runs['planted']
    assert exit_codes(planted) == [1, 1]
    text = output(planted, 0) + output(planted, 1)
    errors = [line for line in text.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and errors[0].endswith(f'{VAL_FREQ}.state: refused to load: it holds Python objects '
                                                   'outside the safe set (it calls posix.system); this project never '
                                                   'writes such files, delete it unless you trust its source')
    assert 'Traceback' not in text
    assert not os.path.exists(planted['marker'])


def test_non_finite_loss_stops_every_rank(runs):
    nan = runs['nan']
    assert exit_codes(nan) == [1, 1]
    reports = [line for r in RANKS for line in output(nan, r).splitlines() if 'non-finite loss' in line]
    assert len(reports) == 1 and 'non-finite loss at iter 2 (l_pix=' in reports[0]
    assert os.listdir(os.path.join(exp_dir(nan['name']), 'training_states')) == ['1.state']


# ---- launchers, in this process ------------------------------------------------------------------

def test_launcher_without_its_environment_is_one_line(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DistributedSetupError) as err:
        init_dist('pytorch', use_cuda=False)
    assert str(err.value) == ('--launcher pytorch needs RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in '
                              'the environment: start it with torchrun --nproc_per_node=N (see README, '
                              '"Multi-process training")')
    for name in TORCHRUN_VARIABLES:
        monkeypatch.setenv(name, '0')
    with pytest.raises(DistributedSetupError, match='^dist_params.backend is nccl but this run trains on the CPU'):
        init_dist('pytorch', use_cuda=False, backend='nccl')


def test_slurm_launcher_on_the_cpu(tmp_path):
    """What srun sets for a 1-task job; ``scontrol`` (a stand-in here) names the allocation's first node."""
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\necho 127.0.0.1\n')
    scontrol.chmod(0o755)
    port = free_port()
    slurm = dict(SLURM_PROCID='0', SLURM_LOCALID='0', SLURM_NTASKS='1', SLURM_NODELIST='node[1-2]',
                 PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with mock.patch.dict(os.environ, slurm):  # init_dist sets torchrun's variables; all undone at the end
        for name in TORCHRUN_VARIABLES:
            os.environ.pop(name, None)
        init_dist('slurm', use_cuda=False, port=port)
        try:
            assert (dist.get_backend(), dist.get_rank(), dist.get_world_size()) == ('gloo', 0, 1)
            assert {k: os.environ[k] for k in TORCHRUN_VARIABLES} == {
                'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)}
        finally:
            end_process_group()
    assert not dist.is_initialized()
