"""Resume BasicSR training runs: finding and loading the training state.

BasicSR 1.4.2 maps a resumed state onto CUDA; :func:`patch_basicsr_train` (applied by
``import cfsrdelta_arch``) points ``basicsr.train`` at the CPU-aware :func:`load_resume_state`, so
foreign projects' train.py resume on CPU too.
"""


def load_resume_state(opt):
    """CPU-aware replacement for ``basicsr.train.load_resume_state``.

    BasicSR 1.4.2 maps a resumed training state onto ``torch.cuda.current_device()``, which fails
    with ``num_gpu: 0``. This version keeps BasicSR's lookup (``--auto_resume`` or
    ``path.resume_state``) and maps tensors to the GPU only when the options ask for one.
    """
    from os import path as osp

    import torch
    from basicsr.utils import check_resume, scandir

    resume_state_path = None
    if opt['auto_resume']:
        state_path = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_path):
            states = [float(v.split('.state')[0])
                      for v in scandir(state_path, suffix='state', recursive=False, full_path=False)]
            if states:
                resume_state_path = osp.join(state_path, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        map_location = torch.device('cuda', torch.cuda.current_device())
    else:
        map_location = torch.device('cpu')
    # Training states hold optimiser and scheduler state (a collections.Counter among them), which
    # torch>=2.6's weights_only loader rejects; they are files this training run wrote itself.
    resume_state = torch.load(resume_state_path, map_location=map_location, weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state


def patch_basicsr_train():
    """Point ``basicsr.train.train_pipeline`` at the CPU-aware :func:`load_resume_state`."""
    import basicsr.train
    basicsr.train.load_resume_state = load_resume_state
