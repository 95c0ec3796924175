"""The collective operations of multi-process training, written so that they also run in one process
(no process group: the value is just computed or returned). Every process of a run must call them at
the same point, or the run hangs."""
import torch.distributed as dist


def from_rank_0(function, *args):
    """``function(*args)`` computed on rank 0 only and handed to every process (a picklable value).

    An exception it raises on rank 0 is raised on every rank, so that all end the same way (e.g. a
    refused training state: one error line from rank 0, status 1 everywhere) instead of the others
    failing on a lost connection.
    """
    if not dist.is_initialized():
        return function(*args)
    shared = [None, None]  # value, exception
    if dist.get_rank() == 0:
        try:
            shared[0] = function(*args)
        except Exception as err:
            shared[1] = err
    dist.broadcast_object_list(shared, src=0)
    if shared[1] is not None:
        raise shared[1]
    return shared[0]


def gather_to_rank_0(value):
    """[value of rank 0, value of rank 1, ...] on rank 0 and None on the others (a picklable value)."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, values, dst=0)
    return values


def mean_over_ranks(tensor):
    """The element-wise mean of ``tensor`` over all processes, on every process (in place)."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor
