"""``import cfsrdelta_arch`` against the unmodified basicsr 1.4.2, in fresh interpreters."""
import importlib.util
import json
import os
import subprocess
import sys

from conftest import ROOT

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
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
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


def test_basicsr_is_unpatched():
    """The shims are needed: basicsr 1.4.2 imports a module that current torchvision no longer has."""
    spec = importlib.util.find_spec('basicsr')
    source = open(os.path.join(os.path.dirname(spec.origin), 'data', 'degradations.py')).read()
    assert 'from torchvision.transforms.functional_tensor import rgb_to_grayscale' in source
    transforms = os.path.dirname(importlib.util.find_spec('torchvision.transforms').origin)
    assert not os.path.exists(os.path.join(transforms, 'functional_tensor.py'))


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
    net = build_network({'type': 'BackboneDelta', 'backbone': {'type': 'CFSR', 'upscale': 2, 'embed_dim': 8, 'depths': [1]},
                         'refiner': {'type': 'RefineNet'}})
    assert type(net).__name__ == 'BackboneDelta'
    assert type(build_loss({'type': 'L1FFTLoss'})).__name__ == 'L1FFTLoss'
