"""The ``jaxticket`` command: presets, training, IMP, baselines, reports, a demo.

::

    jaxticket configs [NAME]                     presets (NAME: resolved config as JSON)
    jaxticket train --config NAME [flags]        one dense training run (IMP level 0 only)
    jaxticket imp --config NAME [flags]          run / resume IMP into --workdir
    jaxticket branch RUN_DIR --kind KIND [--levels 1 2 3]
                                                 baselines from an IMP run (reinit,
                                                 random_mask, finetune, rewind, and
                                                 registered kinds)
    jaxticket report RUN_DIR                     density vs accuracy table, report.md, PNGs
    jaxticket verify RUN_DIR                     every level's files against their checksums
    jaxticket demo [--workdir DIR]               offline quick start on the embedded digits

Flags of ``train`` / ``imp``: ``--config NAME``, ``--workdir DIR``, ``--levels N``,
``--rewind-step K``, ``--seeds S``, ``--steps N`` (training steps per level),
``--batch-size B``, ``--data-dir``, ``--manual-dir``, ``--overwrite``, ``--no-progress``,
``--set key=value`` (repeatable: any setting of the :class:`~jaxticket.lottery.LotteryConfig`
by its name, ``lr=0.01``, ``eval_every=100``, or its path, ``imp.fit.steps=100``; older
paths such as ``train.steps`` too; a setting given twice, by a flag and ``--set``, is refused;
values are JSON when they parse as JSON, else strings, but one starting with ``{`` or ``[``
must be valid JSON; JSON lists become tuples; a pruner is a JSON object, or the bare name of
a registered method that needs no settings) and
``--debug`` (tracebacks). ``--no-compilation-cache`` runs without JAX's persistent
compilation cache (on by default, see :mod:`jaxticket.compilation_cache`). The preset is applied first, then ``--set`` and the named flags. ``--import MODULE`` (any command, repeatable) imports a module first, e.g. one that
registers a pruner of your own (``@jaxticket.pruning.register("mine")``) so that
``--set 'pruner={"method": "mine", ...}'`` finds it.

Errors print one line on stderr: exit code 2 for usage errors (flags, presets, config
keys and values), 1 for runtime errors (a workdir made by another config, a dataset not
available offline, a non-finite loss, ...), 130 when interrupted (run again to resume).
``instability --overwrite`` deletes only what a previous sweep wrote in ``--workdir`` and
refuses a non-empty folder that holds no sweep.

Example::

    jaxticket imp --config lenet_300_100_mnist --workdir runs/lenet --levels 5 \\
        --set lr=1e-3 --set 'pruner={"method": "magnitude", "fraction": 0.2, "scope": "global"}'
    jaxticket branch runs/lenet --kind reinit --levels 1 2 3
    jaxticket report runs/lenet

The package: :mod:`~jaxticket.cli.parser` (the flags), :mod:`~jaxticket.cli.overrides`
(the settings of a command line), :mod:`~jaxticket.cli.commands` (one function per
command) and this module (:func:`main`: errors as one line, exit codes, Ctrl-C).
"""
from __future__ import annotations

import errno
import os
import pathlib
import sys
from typing import Optional, Sequence

from jaxticket.cli.errors import PROG, RunError, UsageError, one_line
from jaxticket.cli.overrides import parse_overrides, parse_value, resolve_config
from jaxticket.cli.parser import DEMO_WORKDIR, build_parser
from jaxticket.cli.commands import COMMANDS

__all__ = ["COMMANDS", "DEMO_WORKDIR", "PROG", "RunError", "UsageError", "build_parser", "import_plugins", "main",
           "parse_overrides", "parse_value", "resolve_config"]


def _quiet_logs() -> None:
    """Silences absl/orbax warnings that are noise for a command-line user, and prints
    Python warnings (e.g. a diverging loss) as one line each."""
    import logging
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr, flush=True)

    warnings.showwarning = one_line
    logging.getLogger("absl").setLevel(logging.CRITICAL)  # a damaged checkpoint: our one line says it
    logging.getLogger("orbax").setLevel(logging.CRITICAL)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.FATAL)
    except ImportError:
        pass


def _runtime_message(e: BaseException) -> Optional[str]:
    """One line for the runtime errors users meet; ``None`` for unexpected ones."""
    from jaxticket import checkpoints, data, pruning, rundir, train

    if isinstance(e, (rundir.RunLockedError, rundir.CorruptRunError, checkpoints.CheckpointError)):
        return str(e)
    if isinstance(e, (rundir.DataMismatchError, rundir.ConfigMismatchError)):
        return f"{e} (on the command line: another --workdir, or --overwrite to discard that run)"
    if isinstance(e, data.DatasetUnavailableError):
        return str(e)
    if isinstance(e, (train.NonFiniteLossError, pruning.PruningError)):
        return str(e)
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = pathlib.Path(e.filename).parent if e.filename else None
        folder = f"the folder {where}" if where is not None else "the folder"
        reason = e.strerror or str(e)
        return f"{folder} is not writable ({reason}); make it writable, or choose another folder (--workdir)"
    if isinstance(e, (RunError, FileNotFoundError, ValueError, RuntimeError, OSError)):
        return str(e)
    return None


def import_plugins(argv: Sequence[str]) -> list[str]:
    """Imports the modules named by ``--import MODULE`` / ``--import=MODULE`` in ``argv``
    (before the parser is built, so that their pruners and branch kinds are known)."""
    import importlib

    names = []
    for i, item in enumerate(argv):
        if item == "--import" and i + 1 < len(argv):
            names.append(argv[i + 1])
        elif item.startswith("--import="):
            names.append(item.split("=", 1)[1])
    if names and "" not in sys.path:
        sys.path.insert(0, "")  # modules beside the experiment script
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UsageError(f"--import {name}: {e}") from None
    return names


def _install_interrupt_handler() -> None:
    """Ctrl-C as ``KeyboardInterrupt``, but never raised inside a garbage-collector
    callback or a ``__del__`` (JAX runs one at every collection): Python swallows an
    exception there ("Exception ignored in ...") and the run would go on as if Ctrl-C had
    not been pressed. There the interrupt is delivered again 50 ms later."""
    import _thread
    import gc
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # someone else's handler: leave it

    def swallowed_here(frame) -> bool:
        callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
        while frame is not None:
            if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
                return True
            frame = frame.f_back
        return False

    def on_sigint(signum, frame):
        if swallowed_here(frame):
            timer = threading.Timer(0.05, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def _interrupted(*, exit_now: bool) -> int:
    """Ctrl-C: the message, and exit code 130.

    By the time the ``KeyboardInterrupt`` reaches :func:`main` the run has unwound: its
    ``finally`` blocks wrote the results files, closed the orbax managers (their saves
    are synchronous) and released the run's lock. As the process's own command line
    (``exit_now``) the process then ends at once with ``os._exit(130)``: an ordinary
    interpreter exit tears JAX/XLA down while its compile and runtime threads may still
    be busy, which crashed (SIGSEGV) when Ctrl-C came during start-up or compilation.
    Called as a function (``main([...])``) it returns 130.
    """
    import signal

    if exit_now:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut this short
        except ValueError:  # not the main thread
            pass
    print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
    if not exit_now:
        return 130
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


def _start_distributed(args) -> None:
    """``--distributed``: ``jax.distributed.initialize`` (auto-detected on TPU pods and
    under SLURM, or ``--coordinator``/``--num-processes``/``--process-id``) before any
    other JAX call; the other processes' standard output is silenced (process 0 speaks
    for the job). The three flags without ``--distributed`` are a usage error."""
    explicit = {"--coordinator": getattr(args, "coordinator", None), "--num-processes": getattr(args, "num_processes", None),
                "--process-id": getattr(args, "process_id", None)}
    if not getattr(args, "distributed", False):
        given = [flag for flag, value in explicit.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} need(s) --distributed (one of several processes)")
        return
    from jaxticket import parallel

    try:
        parallel.initialize_distributed(explicit["--coordinator"], explicit["--num-processes"], explicit["--process-id"])
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--distributed: jax.distributed.initialize failed ({one_line(e)[:300]}); on one machine "
                         "give --coordinator HOST:PORT --num-processes N --process-id I") from None
    if not parallel.is_primary():
        sys.stdout = open(os.devnull, "w")


def _speaks() -> bool:
    """Whether this process prints the job's error lines (one process, or process 0)."""
    import jax

    return "jax" not in sys.modules or not jax.distributed.is_initialized() or jax.process_index() == 0


def _agreed(e: BaseException) -> bool:
    """Errors every process of a job meets alike (process 0 says them once)."""
    from jaxticket import rundir

    return isinstance(e, (rundir.RunLockedError, rundir.ConfigMismatchError, rundir.DataMismatchError))


def _process_prefix() -> str:
    import jax

    return "" if _speaks() else f"[process {jax.process_index()}] "


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Without ``argv`` (the ``jaxticket`` command itself) an interrupted run ends the
    process with exit code 130 (see :func:`_interrupted`); with ``argv`` it returns 130."""
    argv_given = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not argv_given:
        _install_interrupt_handler()
    try:
        import_plugins(argv)
        args = build_parser().parse_args(argv)
        _start_distributed(args)
        from jaxticket import compilation_cache

        if getattr(args, "no_compilation_cache", False):
            compilation_cache.disable()
        else:
            compilation_cache.enable_default()  # the command's programs compile once per machine
        _quiet_logs()
        return COMMANDS[args.command](args)
    except UsageError as e:
        if debug:
            raise
        if _speaks():  # every process of a job checks the same command line: process 0 says it
            print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        return _interrupted(exit_now=argv_given is False)
    except Exception as e:  # noqa: BLE001: one line unless --debug
        if debug:
            raise
        from jaxticket import parallel

        if isinstance(e, parallel.MeshError):  # a mesh found not to fit only once the run was opened
            if _speaks():
                print(f"{PROG}: error: --mesh: {one_line(e)}", file=sys.stderr)
            return UsageError.exit_code
        message = _runtime_message(e)
        if message is None:
            message = f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)"
        if _speaks() or not _agreed(e):
            print(f"{PROG}: error: {_process_prefix()}{one_line(message)}", file=sys.stderr)
        return RunError.exit_code


if __name__ == "__main__":
    sys.exit(main())
