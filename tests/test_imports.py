"""``import cfsrdelta_arch`` against the unmodified basicsr 1.4.2, in fresh interpreters."""
import json
import os
import subprocess
import sys

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


def run_python(code):
    """Run ``code`` in a fresh interpreter (this venv) with the checkout importable; return its report."""
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=checkout_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('REPORT ')]
    assert len(lines) == 1, proc.stdout[-2000:]
    return json.loads(lines[0][len('REPORT '):])


def assert_all_registered(report):
    for reg, names in REGISTERED.items():
        for name in names:
            assert report['found'][reg][name].startswith('cfsrdelta_arch.'), (reg, name)
    assert report['patched']


def test_alias_lets_basicsr_degradations_use_torchvision_grayscale():
    """After ``import cfsrdelta_arch``, BasicSR's degradations (which import ``rgb_to_grayscale`` from the
    module torchvision dropped) import, and their grayscale is torchvision's, value for value."""
    code = '''
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
    report = run_python(code)
    assert report['same_as_torchvision'] and report['max_error'] < 1e-6 and report['gray_noise_is_gray']


def test_a_real_functional_tensor_module_is_left_alone(tmp_path):
    """A torchvision that ships ``functional_tensor`` again gets no alias: its own module is imported."""
    (tmp_path / 'functional_tensor.py').write_text('def rgb_to_grayscale(img, num_output_channels=1):\n'
                                                   '    return "real module"\n')
    code = f'''
import sys, json
import torchvision.transforms
torchvision.transforms.__path__.append({str(tmp_path)!r})  # the "real" module, found by the import system
import cfsrdelta_arch
from basicsr.data import degradations
module = sys.modules['torchvision.transforms.functional_tensor']
report = {{'file': getattr(module, '__file__', None), 'gray': degradations.rgb_to_grayscale(None)}}
print('REPORT ' + json.dumps(report))
'''
    report = run_python(code)
    assert report == {'file': str(tmp_path / 'functional_tensor.py'), 'gray': 'real module'}


def test_import_twice_registers_everything():
    report = run_python('import cfsrdelta_arch\nimport cfsrdelta_arch\n' + REPORT)
    assert_all_registered(report)
    assert 'cfsrdelta_arch.utils.compat' in report['alias_doc']


def test_import_after_another_package_imported_basicsr():
    # Another package got basicsr importable with its own stub first; the plugin must keep it and work.
    code = '''
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
    report = run_python(code)
    assert_all_registered(report)
    assert report['alias_doc'] == 'stub of another package'


def test_registered_names_build_through_basicsr():
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    net = build_network({'type': 'BackboneDelta', 'backbone': TINY_CFSR,
                         'refiner': {'type': 'RefineNet'}})
    assert type(net).__name__ == 'BackboneDelta'
    assert type(build_loss({'type': 'L1FFTLoss'})).__name__ == 'L1FFTLoss'
