"""``import cfsrdelta_arch`` against the unmodified basicsr 1.4.2, in fresh interpreters."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_CFSR, checkout_env

REGISTERED = {
    'ARCH_REGISTRY': ['CFSR', 'LESRCNN', 'RefineNet', 'LRRefineNet', 'BPRefineNet', 'BackboneDelta'],
    'MODEL_REGISTRY': ['TTASRModel', 'BackboneDeltaModel'],
    'LOSS_REGISTRY': ['L1FFTLoss'],
    'DATASET_REGISTRY': ['PairedCachedBaseDataset'],
}

REPORT = '''
import json, sys
from basicsr.utils import registry
import basicsr.train
from cfsrdelta_arch.app.resume import load_resume_state
found = {reg: {name: getattr(registry, reg).get(name).__module__ for name in names}
         for reg, names in %r.items()}
alias = sys.modules['torchvision.transforms.functional_tensor']
print('REPORT ' + json.dumps({'found': found, 'patched': basicsr.train.load_resume_state is load_resume_state,
                              'alias_doc': alias.__doc__}))
''' % (REGISTERED,)


ALIAS = '''
import json, torch
import cfsrdelta_arch
from basicsr.data import degradations
from torchvision.transforms.functional import rgb_to_grayscale
x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
weighted = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # ITU-R 601-2 luma
print('REPORT ' + json.dumps({
    'same_as_torchvision': all(torch.equal(degradations.rgb_to_grayscale(x, n), rgb_to_grayscale(x, n))
                               for n in (1, 3)),
    'max_error': (degradations.rgb_to_grayscale(x) - weighted).abs().max().item(),
    'gray_noise_is_gray': (lambda n: torch.equal(n[:, 0], n[:, 1]) and torch.equal(n[:, 1], n[:, 2]))(
        degradations.generate_poisson_noise_pt(x, gray_noise=1)),  # BasicSR's own use of rgb_to_grayscale
}))
'''

# A torchvision that ships ``functional_tensor`` again: the module in {folder}, found by the import system.
REAL_MODULE = '''
import sys, json
import torchvision.transforms
torchvision.transforms.__path__.append({folder!r})
import cfsrdelta_arch
from basicsr.data import degradations
module = sys.modules['torchvision.transforms.functional_tensor']
report = {{'file': getattr(module, '__file__', None), 'gray': degradations.rgb_to_grayscale(None)}}
print('REPORT ' + json.dumps(report))
'''

TWICE = 'import cfsrdelta_arch\nimport cfsrdelta_arch\n' + REPORT

# Another package got basicsr importable with its own stub first; the plugin must keep it and work.
AFTER_ANOTHER_PACKAGE = '''
import sys, types
from torchvision.transforms import functional
stub = types.ModuleType('torchvision.transforms.functional_tensor')
stub.__doc__ = 'stub of another package'
stub.rgb_to_grayscale = functional.rgb_to_grayscale
sys.modules[stub.__name__] = stub
import basicsr
import cfsrdelta_arch
assert sys.modules['torchvision.transforms.functional_tensor'] is stub
''' + REPORT


# Someone else's BasicSR project (tests/test_foreign_project.py runs one in forked processes): its
# own folder as working directory, only the checkout on PYTHONPATH, the plugin imported first.
FOREIGN_PROJECT = '''
import cfsrdelta_arch
from basicsr.train import train_pipeline
from basicsr.test import test_pipeline
''' + REPORT.replace("'alias_doc': alias.__doc__", "'alias_doc': alias.__doc__, 'file': cfsrdelta_arch.__file__")


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """{case: (output, exit status)} of each case's code in a fresh interpreter (this venv, only the
    checkout added to PYTHONPATH), all started at once: each pays seconds of torch/torchvision/basicsr
    imports; 'folder' is the 'real module' case's folder and the foreign project's working directory."""
    folder = tmp_path_factory.mktemp('fresh_interpreters')
    (folder / 'functional_tensor.py').write_text('def rgb_to_grayscale(img, num_output_channels=1):\n'
                                                 '    return "real module"\n')
    codes = {'alias': (ALIAS, ROOT), 'real_module': (REAL_MODULE.format(folder=str(folder)), ROOT),
             'twice': (TWICE, ROOT), 'after_another_package': (AFTER_ANOTHER_PACKAGE, ROOT),
             'foreign_project': (FOREIGN_PROJECT, folder)}
    procs = {case: subprocess.Popen([sys.executable, '-c', code], cwd=cwd, env=checkout_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for case, (code, cwd) in codes.items()}
    try:
        yield {'folder': folder, **{case: (proc.communicate(timeout=300)[0], proc.returncode)
                                    for case, proc in procs.items()}}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def report_of(runs, case):
    """The report ``case``'s interpreter printed, after checking that it ended successfully."""
    output, status = runs[case]
    assert status == 0, output[-4000:]
    lines = [line for line in output.splitlines() if line.startswith('REPORT ')]
    assert len(lines) == 1, output[-2000:]
    return json.loads(lines[0][len('REPORT '):])


def assert_all_registered(report):
    for reg, names in REGISTERED.items():
        for name in names:
            assert report['found'][reg][name].startswith('cfsrdelta_arch.'), (reg, name)
    assert report['patched']


def test_alias_lets_basicsr_degradations_use_torchvision_grayscale(runs):
    """After ``import cfsrdelta_arch``, BasicSR's degradations (which import ``rgb_to_grayscale`` from the
    module torchvision dropped) import, and their grayscale is torchvision's, value for value."""
    report = report_of(runs, 'alias')
    assert report['same_as_torchvision'] and report['max_error'] < 1e-6 and report['gray_noise_is_gray']


def test_a_real_functional_tensor_module_is_left_alone(runs):
    """A torchvision that ships ``functional_tensor`` again gets no alias: its own module is imported."""
    assert report_of(runs, 'real_module') == {'file': str(runs['folder'] / 'functional_tensor.py'),
                                              'gray': 'real module'}


def test_import_twice_registers_everything(runs):
    report = report_of(runs, 'twice')
    assert_all_registered(report)
    assert 'cfsrdelta_arch.utils.compat' in report['alias_doc']


def test_import_after_another_package_imported_basicsr(runs):
    report = report_of(runs, 'after_another_package')
    assert_all_registered(report)
    assert report['alias_doc'] == 'stub of another package'


def test_foreign_project_imports_this_checkout_from_its_own_folder(runs):
    report = report_of(runs, 'foreign_project')
    assert_all_registered(report)
    assert report['file'] == os.path.join(ROOT, 'cfsrdelta_arch', '__init__.py')


def test_registered_names_build_through_basicsr():
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    net = build_network({'type': 'BackboneDelta', 'backbone': TINY_CFSR,
                         'refiner': {'type': 'RefineNet'}})
    assert type(net).__name__ == 'BackboneDelta'
    assert type(build_loss({'type': 'L1FFTLoss'})).__name__ == 'L1FFTLoss'
