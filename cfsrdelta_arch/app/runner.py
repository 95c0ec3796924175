"""BasicSR's train/test pipelines with the plugin registered, early stopping, checked option files and
benchmark tables."""
import logging
import sys
from os import path as osp

import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.train import train_pipeline as basicsr_train_pipeline
from basicsr.utils import get_env_info, get_root_logger, get_time_str, make_exp_dirs
from basicsr.utils.dist_util import get_dist_info
from basicsr.utils.options import dict2str

from cfsrdelta_arch.app.distributed import end_process_group
from cfsrdelta_arch.app.options import check_command_line, parse_options
from cfsrdelta_arch.models.ttasr_model import EarlyStopping, ResumeError
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse
from cfsrdelta_arch.utils.fileio import write_text_atomic
from cfsrdelta_arch.utils.tables import markdown_table


def train_pipeline(root_path):
    """Run ``basicsr.train.train_pipeline`` (made resumable by ``cfsrdelta_arch.app.resume``).

    An early stop (``val.early_stopping``) returns normally; the model has logged it and saved the
    best checkpoint. A training state that must not or cannot be resumed from ends the program with
    one line naming the file (exit status 1; in a multi-process run rank 0 prints it, the others exit
    with the status only). A multi-process run leaves its process group at the end, however it ends.

    Args:
        root_path (str): repository root; experiments/ and tb_logger/ are created under it.
    """
    try:
        basicsr_train_pipeline(root_path)
    except EarlyStopping:
        pass
    except ResumeError as err:
        sys.exit(f'error: {err}' if get_dist_info()[0] == 0 else 1)
    finally:
        end_process_group()


def format_table(rows, metrics):
    """Markdown table of ``rows`` = [(dataset, {metric: value})]."""
    return markdown_table(['dataset', *metrics], [[name] + [f'{values[m]:.4f}' for m in metrics]
                                                  for name, values in rows])


def test_pipeline(root_path):
    """BasicSR's test pipeline, plus: the option file is checked first (one line per mistake, before
    anything is created: :func:`cfsrdelta_arch.app.options.check_command_line`);
    datasets whose HR folder is missing are skipped with a warning (the test options list all five
    benchmarks); a table of all results is logged and written to results/<name>/results.md. Runs
    with the CLI's allocator settings (utils/allocator.py).

    Args:
        root_path (str): repository root; results/<name>/ is created under it.
    """
    keep_freed_memory_for_reuse()
    skipped = check_command_line(is_train=False)
    opt, _ = parse_options(root_path, is_train=False)
    make_exp_dirs(opt)
    log_file = osp.join(opt['path']['log'], f"test_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))

    test_loaders = []
    for key, dataset_opt in sorted(opt['datasets'].items()):
        if key in skipped:
            logger.warning(f"Skipping {dataset_opt['name']}: {skipped[key]} (see README, \"Data\")")
            continue
        test_set = build_dataset(dataset_opt)
        test_loaders.append(build_dataloader(test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                             sampler=None, seed=opt['manual_seed']))
        logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")

    torch.set_grad_enabled(False)
    model = build_model(opt)
    rows = []
    for test_loader in test_loaders:
        name = test_loader.dataset.opt['name']
        logger.info(f'Testing {name}...')
        model.validation(test_loader, current_iter=opt['name'], tb_logger=None,
                         save_img=opt['val'].get('save_img', False))
        if getattr(model, 'metric_results', None):
            rows.append((name, dict(model.metric_results)))
    if rows:
        table = format_table(rows, list(rows[0][1]))
        logger.info(f"Results of {opt['name']}:\n{table}")
        write_text_atomic(osp.join(opt['path']['results_root'], 'results.md'), table + '\n')
    return rows

