"""Install the cfsrdelta_arch BasicSR plugin (``pip install -e .``).

torch/torchvision are not pinned here: scripts/setup_env.sh installs the builds this project is
tested with (torch 2.14.1, torchvision 0.29.1) before basicsr, which needs torch at build time.
"""
from setuptools import find_packages, setup

setup(
    name='cfsrdelta_arch',
    version='0.1.0',
    description='CFSR-Delta: CFSR, LESRCNN and frozen-backbone refiners as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['cfsrdelta_arch', 'cfsrdelta_arch.*']),
    package_data={'cfsrdelta_arch.data': ['kernels/*.mat']},  # USRNet's 12 test kernels (README, "Degraded inputs")
    python_requires='>=3.9',
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.0',
        'torchvision',
        'opencv-python',
        'Pillow',  # image headers without decoding (dataset pair checks)
        'pypng',  # gray+alpha PNGs, 8 and 16 bit (OpenCV encodes 1, 3 or 4 channels only)
        'numpy',
        'pyyaml',
        'lmdb',
        'tqdm',
        'scipy',  # degraded inputs: the kernel file (io)
    ],
    extras_require={
        'test': ['pytest'],
        'demo': ['scikit-image'],
        'onnx': ['onnx', 'onnxruntime'],
        'openvino': ['openvino'],  # --backend openvino (app/backends.py)
        'figures': ['matplotlib'],
        'spandrel': ['spandrel'],  # cfsrdelta_arch.register_spandrel(): spandrel/chaiNNer model loading
    },
    entry_points={'console_scripts': ['cfsrdelta-infer=cfsrdelta_arch.app.cli:main',
                                      'cfsrdelta-train=cfsrdelta_arch.train:main',
                                      'cfsrdelta-test=cfsrdelta_arch.test:main']},
)
