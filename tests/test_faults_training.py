"""Training runs lose nothing: each fault is produced as a user would meet it, in processes of their own
(tests/forked_python.py).

One tiny BackboneDelta run (tiny CFSR backbone, LRRefineNet width 8, 3 generated 32x32 images, 6
batches per epoch) whose early stopping is set up so that the best checkpoint is the first
validation's (``min_delta: 100`` dB: no later validation counts as a gain) and the run ends at
iteration STOP_ITER. It is run
- uninterrupted, through a foreign project's train.py that calls BasicSR's own ``train_pipeline``
  (so early stopping must end BasicSR's loop cleanly);
- through ``cfsrdelta_arch/train.py``, killed with SIGKILL once at least three training states exist,
  then resumed with ``--auto_resume`` from another working directory: as is, and with its newest
  state and an older checkpoint truncated.
``--auto_resume`` also meets a planted malicious state in another run's folder.
Every resumed run must reach STOP_ITER with weights, best checkpoint and best.json bit-identical to
the uninterrupted run. A separate TTASRModel run (CFSR from scratch) diverges to a non-finite loss.
Processes run concurrently in two waves to keep the file fast on a small machine.
"""
import glob
import json
import os
import shutil
import signal
import time

import forked_python
import pytest
import torch
import yaml

from conftest import ROOT, TINY_CFSR, write_tiny_dataset
from test_pipelines import SCALE, train_options

VAL_FREQ = 2
PATIENCE = 10
STOP_ITER = VAL_FREQ * (PATIENCE + 1)  # first validation is the best, then PATIENCE stale ones
KILL_AFTER_STATE = 6  # states 2, 4, 6 exist when the run is killed

FOREIGN_TRAIN = '''\
import cfsrdelta_arch  # noqa: F401  (registers the plugin, as a foreign project does)
from basicsr.train import train_pipeline

train_pipeline({root!r})  # the experiments go where the other runs' go
'''


class PlantedPickle:
    """Pickles to ``os.system('touch <marker>')``: what a malicious training state would run on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def delta_options(name, data, backbone, **changes):
    opt = train_options(name, data, backbone, total_iter=10_000, lr=2e-3,
                        val_extra={'val_freq': VAL_FREQ,
                                   'early_stopping': {'patience': PATIENCE, 'min_delta': 100.0}})
    opt['datasets']['train']['dataset_enlarge_ratio'] = 4  # 12 samples: 6 batches per epoch
    opt['logger']['save_checkpoint_freq'] = VAL_FREQ
    opt['logger']['print_freq'] = 100
    for key, value in changes.items():
        opt[key] = value
    return opt


def start(args, opt, opt_path, cwd):
    """Write ``opt`` to ``opt_path`` and start ``python <args> -opt <opt_path> ...`` in ``cwd``, in a
    process of its own (tests/forked_python.py)."""
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    script, *extra = args
    env = dict(os.environ, OMP_NUM_THREADS='1')  # concurrent runs on few cores: no thread oversubscription
    return forked_python.ForkedCommand([script, '-opt', opt_path, *extra], cwd, env)


def finish(proc):
    """(returncode, stdout, stderr) once ``proc`` has ended."""
    done = proc.wait(300)
    return done.returncode, done.stdout, done.stderr


def exp_dir(name):
    return os.path.join(ROOT, 'experiments', name)


def params(name, label):
    path = os.path.join(exp_dir(name), 'models', f'net_g_{label}.pth')
    return torch.load(path, map_location='cpu', weights_only=True)['params']


def same_tensors(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def state_iters(name):
    return sorted(int(os.path.basename(p)[:-len('.state')])
                  for p in glob.glob(os.path.join(exp_dir(name), 'training_states', '*.state')))


def truncate(path):
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Run every case; returns {case: (returncode, stdout, stderr)} plus the names and paths used."""
    tmp = tmp_path_factory.mktemp('faults')
    tag = f'pytest_faults_{tmp.name}'.replace('-', '_')
    names = {case: f'{tag}_{case}' for case in ('plain', 'killed', 'fallback', 'planted', 'nan')}
    data = write_tiny_dataset(str(tmp / 'data'), SCALE, n=3, size=32)
    torch.manual_seed(0)
    backbone = str(tmp / 'backbone.pth')
    from cfsrdelta_arch.archs.cfsr_arch import CFSR
    torch.save({'params': CFSR(embed_dim=8, depths=(1,), upscale=SCALE).state_dict()}, backbone)
    (tmp / 'foreign_train.py').write_text(FOREIGN_TRAIN.format(root=ROOT))
    elsewhere = tmp / 'elsewhere'  # resumes run from here: not the repository root
    elsewhere.mkdir()
    train_py = os.path.join(ROOT, 'cfsrdelta_arch', 'train.py')
    marker = tmp / 'PLANTED_PICKLE_RAN'
    # CFSR from scratch with TTASRModel; an absurd learning rate makes the second loss non-finite.
    nan_opt = delta_options(names['nan'], data, backbone, model_type='TTASRModel', network_g=dict(TINY_CFSR))
    nan_opt['train']['optim_g']['lr'] = 1e30
    nan_opt['val']['val_freq'] = nan_opt['logger']['save_checkpoint_freq'] = 1
    try:
        # Wave 1: the uninterrupted run (foreign entry point), the run to be killed, the diverging run
        # and an auto-resume that finds a planted malicious state.
        planted = os.path.join(exp_dir(names['planted']), 'training_states', '2.state')
        os.makedirs(os.path.dirname(planted))
        torch.save({'epoch': 0, 'iter': 2, 'optimizers': [PlantedPickle(marker)]}, planted)
        procs = {
            'plain': start([str(tmp / 'foreign_train.py')], delta_options(names['plain'], data, backbone),
                           tmp / 'plain.yml', tmp),
            'nan': start([train_py], nan_opt, tmp / 'nan.yml', ROOT),
            'planted': start([train_py, '--auto_resume'], delta_options(names['planted'], data, backbone),
                             tmp / 'planted.yml', elsewhere),
        }
        killed = start([train_py], delta_options(names['killed'], data, backbone), tmp / 'killed.yml', ROOT)
        state = os.path.join(exp_dir(names['killed']), 'training_states', f'{KILL_AFTER_STATE}.state')
        deadline = time.time() + 240
        while not os.path.exists(state) and killed.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if killed.poll() is None:
            os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        killed_at = state_iters(names['killed'])
        assert KILL_AFTER_STATE in killed_at and max(killed_at) < STOP_ITER, killed_at

        # A copy of the killed run with its newest state and an older checkpoint truncated.
        shutil.copytree(exp_dir(names['killed']), exp_dir(names['fallback']))
        latest = max(killed_at)
        truncate(os.path.join(exp_dir(names['fallback']), 'training_states', f'{latest}.state'))
        truncate(os.path.join(exp_dir(names['fallback']), 'models', f'net_g_{latest - VAL_FREQ}.pth'))

        # Wave 2: the two resumes, from another working directory.
        procs.update({case: start([train_py, '--auto_resume'], delta_options(names[case], data, backbone),
                                  tmp / f'{case}.yml', elsewhere)
                      for case in ('killed', 'fallback')})
        results = {case: finish(proc) for case, proc in procs.items()}
        yield dict(results=results, names=names, killed_at=killed_at, marker=marker, planted=planted)
    finally:
        for name in names.values():
            for path in glob.glob(os.path.join(ROOT, '*', glob.escape(name) + '*')):
                shutil.rmtree(path, ignore_errors=True)


def test_sigkill_then_auto_resume_from_elsewhere_is_bit_identical(runs):
    names, results = runs['names'], runs['results']
    for case in ('plain', 'killed'):
        code, out, err = results[case]
        assert code == 0, err[-3000:]
        assert state_iters(names[case])[-1] == STOP_ITER  # stopped early, at the same iteration
        assert not os.path.exists(os.path.join(exp_dir(names[case]), 'models', f'net_g_{STOP_ITER + VAL_FREQ}.pth'))
    assert same_tensors(params(names['killed'], STOP_ITER), params(names['plain'], STOP_ITER))
    # The best record survived the kill: the resumed validations (all worse by min_delta) kept the
    # first validation's checkpoint, as the uninterrupted run did.
    assert same_tensors(params(names['killed'], 'best'), params(names['plain'], 'best'))
    assert same_tensors(params(names['killed'], 'best'), params(names['killed'], VAL_FREQ))
    best = [json.load(open(os.path.join(exp_dir(names[case]), 'best.json'))) for case in ('plain', 'killed')]
    assert best[0] == best[1] and best[0]['iter'] == VAL_FREQ
    # The resumed run did not restart: BasicSR would have archived the killed run's folder.
    assert not glob.glob(exp_dir(names['killed']) + '_archived_*')


def test_early_stop_ends_basicsr_own_pipeline_with_status_0(runs):
    code, out, err = runs['results']['plain']
    assert code == 0 and 'Traceback' not in err
    stops = [line for line in (out + err).splitlines() if 'early stop at iter' in line]
    assert len(stops) == 1 and f'early stop at iter {STOP_ITER}: ' in stops[0]
    assert os.path.isfile(os.path.join(exp_dir(runs['names']['plain']), 'models', 'net_g_best.pth'))


def test_truncated_state_and_checkpoint_are_skipped(runs):
    names = runs['names']
    code, out, err = runs['results']['fallback']
    assert code == 0, err[-3000:]
    latest = max(runs['killed_at'])
    skipped = [line for line in err.splitlines() if line.startswith('Skipping training state')]
    assert len(skipped) == 2, err
    assert f'{latest}.state: unreadable, truncated or corrupt' in skipped[0]
    assert f'net_g_{latest - VAL_FREQ}.pth: unreadable, truncated or corrupt' in skipped[1]
    assert f"iter: {latest - 2 * VAL_FREQ}." in out + err  # BasicSR's "Resuming training from ..." line
    assert same_tensors(params(names['fallback'], STOP_ITER), params(names['plain'], STOP_ITER))


def test_planted_pickle_is_refused_and_never_runs(runs):
    code, out, err = runs['results']['planted']
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"error: {runs['planted']}: refused to load: it holds Python objects outside the safe set (it calls "
        'posix.system); this project never writes such files, delete it unless you trust its source')
    assert 'Traceback' not in err
    assert not runs['marker'].exists()


def test_non_finite_loss_stops_before_saving(runs):
    name = runs['names']['nan']
    code, out, err = runs['results']['nan']
    assert code == 1 and 'Traceback' not in err
    reports = [line for line in err.splitlines() if 'non-finite' in line]
    assert len(reports) == 1 and 'ERROR: non-finite loss at iter 2 (l_pix=' in reports[0]
    assert state_iters(name) == [1]
    models = os.path.join(exp_dir(name), 'models')
    assert sorted(os.listdir(models)) == ['net_g_1.pth', 'net_g_best.pth']
    assert json.load(open(os.path.join(exp_dir(name), 'best.json')))['iter'] == 1
    best = params(name, 'best')
    assert same_tensors(best, params(name, 1)) and all(torch.isfinite(v).all() for v in best.values())
