"""The package's layers import in one direction only, and nothing edits sys.path.

utils (bottom, no package imports but its own) -> archs -> data, losses -> models -> app; the
package root and the train/test entry points sit on top. Read from the source with ``ast``, so an
upward import fails here even where it would happen to work at run time.
"""
import ast
import os

import pytest

from conftest import ROOT

PACKAGE = 'cfsrdelta_arch'
LAYERS = {'utils': 0, 'archs': 1, 'data': 2, 'losses': 2, 'models': 3, 'app': 4}
TOP = 5  # cfsrdelta_arch/__init__.py, train.py, test.py


def package_modules():
    """{dotted module name: file path} of every module in the package."""
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in files:
            if name.endswith('.py'):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, '.')
                found[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(folder, name)
    return found


def layer_of(module):
    parts = module.split('.')
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def package_imports(module, path):
    """Dotted names of the package modules that ``module`` (at ``path``) imports."""
    is_pkg = path.endswith('__init__.py')
    targets = []
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.')
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                prefix = '.'.join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            targets += [prefix] + [f'{prefix}.{a.name}' for a in node.names]
    return [t for t in targets if t == PACKAGE or t.startswith(PACKAGE + '.')]


MODULES = package_modules()


@pytest.mark.parametrize('module', sorted(MODULES))
def test_imports_point_down(module):
    own = layer_of(module)
    upward = [t for t in package_imports(module, MODULES[module])
              if (t in MODULES or t.rsplit('.', 1)[0] in MODULES) and layer_of(t) > own]
    assert not upward, f'{module} (layer {own}) imports from a higher layer: {upward}'


def test_utils_import_nothing_from_the_rest_of_the_package():
    for module, path in MODULES.items():
        if layer_of(module) == LAYERS['utils']:
            others = [t for t in package_imports(module, path) if not t.startswith(f'{PACKAGE}.utils')]
            assert not others, f'{module} imports {others}'


def test_the_checker_sees_an_upward_import(tmp_path):
    """Guard against a checker that passes everything: a planted upward import is found."""
    path = tmp_path / 'planted.py'
    path.write_text('from cfsrdelta_arch.app.engine import SREngine\nfrom ..models import ttasr_model\n')
    found = package_imports('cfsrdelta_arch.archs.planted', str(path))
    assert 'cfsrdelta_arch.app.engine' in found and 'cfsrdelta_arch.models.ttasr_model' in found
    assert any(layer_of(t) > layer_of('cfsrdelta_arch.archs.planted') for t in found)


def test_no_sys_path_edits():
    """The package is installed (pip install -e .): no script, test or module edits sys.path."""
    offenders = []
    for top in (PACKAGE, 'scripts', 'tests'):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(folder, name)
                    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
                        if isinstance(node, ast.Attribute) and node.attr in ('insert', 'append') \
                                and isinstance(node.value, ast.Attribute) and node.value.attr == 'path' \
                                and isinstance(node.value.value, ast.Name) and node.value.value.id == 'sys':
                            offenders.append(os.path.relpath(path, ROOT))
    assert not offenders, offenders
