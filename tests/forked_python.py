"""Run ``python <command>`` in a process forked from a server that has imported the package once.

Starting Python and importing torch, torchvision and BasicSR takes 5 to 10 s of CPU per process on
the 2-core test machine, and the suite runs dozens of commands as a user does. Here each command is
run by a process forked from multiprocessing's forkserver, which has imported ``cfsrdelta_arch`` (the
one this pytest process imports) and run nothing, so no runtime's thread pool is forked. The command
runs as ``__main__`` with its own argv, working folder, environment, stdout/stderr files, numpy
seed, exit status and signals, and ends as ``python`` does (the ``sys.exit`` message, then the
non-daemon threads, then the atexit handlers; an uncaught Ctrl-C kills it with SIGINT).
``sys.path`` stays the server's (python would put the script's folder first): the package is
installed, and what the commands import comes from it.

Not for what only a fresh interpreter shows (imports, PYTHONPATH, interpreter flags, glibc's
``MALLOC_*`` variables, peak RSS): those tests start real processes.
"""
import atexit
import multiprocessing
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback

import numpy
import torch

FORKSERVER = multiprocessing.get_context('forkserver')
FORKSERVER.set_forkserver_preload(['cfsrdelta_arch', __name__])


def run_as_main(command, cwd, env, log):
    """Body of a forked process: run ``command`` (``('-m', module, *args)``, ``('-c', code, *args)`` or
    ``(script, *args)``) as ``python`` would, in ``cwd`` with the environment ``env``, stdout to
    ``log + '.out'`` and stderr to ``log + '.err'``; it ends as python does (module docstring)."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if 'OMP_NUM_THREADS' in env:  # torch read it when the server imported it
        torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    # A terminal's Ctrl-C: a suite started in the background (``cmd &`` in a script) inherits SIGINT
    # ignored, which Python then keeps ignoring; the commands must see it as a user's interrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd, suffix in ((1, '.out'), (2, '.err')):
        os.dup2(os.open(log + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    numpy.random.seed()  # a fresh interpreter's global numpy state is seeded from the OS
    status, interrupted = 0, False
    try:
        if command[0] == '-m':
            sys.argv = list(command[1:])
            sys.modules.pop(command[1], None)  # python -m starts without it
            runpy.run_module(command[1], run_name='__main__', alter_sys=True)
        elif command[0] == '-c':
            sys.argv = ['-c', *command[2:]]
            exec(compile(command[1], '<string>', 'exec'), {'__name__': '__main__', '__builtins__': __builtins__})
        else:
            sys.argv = list(command)
            runpy.run_path(os.path.abspath(command[0]), run_name='__main__')
    except SystemExit as exit_:
        status = exit_.code
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:
        traceback.print_exc()
        status = 1
    if status is not None and not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    threading._shutdown()  # what python does after __main__, in its order
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status or 0)


class ForkedCommand:
    """``command`` (see :func:`run_as_main`) running in a forked process, like ``subprocess.Popen``:
    ``pid``, :meth:`poll`, :meth:`kill` and :meth:`wait` (its CompletedProcess, text output). ``env``:
    the command's environment (None: this process's, as it is now)."""

    def __init__(self, command, cwd, env=None):
        self.args = tuple(map(str, command))
        self.folder = tempfile.mkdtemp(prefix='forked_python_')
        self.log = os.path.join(self.folder, 'log')
        env = dict(os.environ if env is None else env)
        self.process = FORKSERVER.Process(target=run_as_main, args=(self.args, str(cwd), env, self.log))
        self.process.start()
        self.pid = self.process.pid

    def poll(self):
        return self.process.exitcode

    def kill(self):
        self.process.kill()

    def wait(self, timeout=600):
        """The CompletedProcess once the command has ended (killed after ``timeout`` s: TimeoutExpired)."""
        try:
            self.process.join(timeout)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join()
                raise subprocess.TimeoutExpired(self.args, timeout)
            outputs = []
            for suffix in ('.out', '.err'):  # missing if it died before its output was redirected
                path = self.log + suffix
                outputs.append(open(path).read() if os.path.exists(path) else '')
            return subprocess.CompletedProcess(self.args, self.process.exitcode, *outputs)
        finally:
            if self.process.exitcode is not None:
                self.process.close()
            shutil.rmtree(self.folder, ignore_errors=True)


def run(command, cwd, env=None, timeout=600):
    """The CompletedProcess of ``command`` run to its end in a forked process."""
    return ForkedCommand(command, cwd, env).wait(timeout)
