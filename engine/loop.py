"""Pieces of a training loop that Theano and Lasagne do not provide.

- ``Prefetcher``: builds the next batches in a worker thread while the
  compiled step runs (the C ops release the GIL), in order and independent of
  timing.
- ``Progress``: progress with the time left, on a terminal or in a log.
- ``StopRequests`` / ``Interrupted`` / ``Stopped``: SIGINT and SIGTERM stop a
  loop between two steps, so that it can save first, or at once where there
  is nothing to save.
- ``compute_threads``, ``library_versions``, ``machine_description``,
  ``git_state``: what a run records about where it ran.
"""
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from . import compat  # noqa: F401  (configures Theano before it is imported)
import theano
import theano.tensor as T
import lasagne

from . import layers


class Prefetcher:
    """Produce ``make(i)`` for each i in ``indices`` in a worker thread, at most
    ``depth`` ahead. The results come in order and do not depend on timing."""

    _DONE = object()

    def __init__(self, make, indices, depth=3):
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make, indices), daemon=True)
        self._thread.start()

    def _run(self, make, indices):
        try:
            for i in indices:
                if not self._put(make(i)):
                    return
            self._put(self._DONE)
        except BaseException as error:  # surfaced in the consumer
            self._put(error)

    def _put(self, item):
        """Queue ``item`` unless the consumer has stopped; never blocks for good."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._thread.join()


def format_duration(seconds):
    """``3d 4h``, ``5h 12m``, ``12m 5s`` or ``45s``: two units at most."""
    seconds = int(round(max(seconds, 0)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return "%dd %dh" % (days, hours)
    if hours:
        return "%dh %02dm" % (hours, minutes)
    if minutes:
        return "%dm %02ds" % (minutes, secs)
    return "%ds" % secs


class Progress:
    """Progress of a loop of ``total`` steps, with the time left.

    On a terminal (stderr), one line redrawn at most twice a second and cut to
    the terminal's width. Elsewhere (a log file, a batch job, ``docker run``
    without ``-t``), a plain line through ``log`` every ``every`` seconds, so
    that a long epoch shows progress in logs too.

    Parameters
    ----------
    label : str
        What is counted, e.g. ``epoch 3``.
    total : int
        Steps of the loop.
    log : callable or None
        Where the plain lines go (None: nowhere).
    every : float
        Seconds between plain lines.
    loops_after : int
        Loops of the same length still to come after this one (epochs left):
        the ETA of the whole run assumes they take as long as this one.
    """

    def __init__(self, label, total, log=None, every=60.0, loops_after=0):
        self.label, self.total, self.log, self.every = label, total, log, every
        self.loops_after = loops_after
        self.terminal = sys.stderr.isatty()
        self.start = time.time()
        self.last_drawn = self.last_logged = self.start

    def status(self, done, text="", now=None):
        """``epoch 3 120/390 loss 1.23, 2m 10s, 4m 40s left, run 2d 3h left``."""
        elapsed = (now or time.time()) - self.start
        parts = ["%s %d/%d" % (self.label, done, self.total)]
        if text:
            parts.append(text)
        parts.append(format_duration(elapsed))
        if 0 < done < self.total or (done and self.loops_after):
            per_step = elapsed / done
            left = per_step * (self.total - done)
            parts.append("%s left" % format_duration(left))
            if self.loops_after:
                parts.append("run %s left" % format_duration(
                    left + per_step * self.total * self.loops_after))
        return ", ".join(parts)

    def update(self, done, text=""):
        now = time.time()
        if self.terminal:
            if now - self.last_drawn < 0.5 and done < self.total:
                return
            self.last_drawn = now
            width = shutil.get_terminal_size((80, 24)).columns - 1
            sys.stderr.write("\r\033[K" + self.status(done, text, now)[:width])
            sys.stderr.flush()
        elif self.log is not None and now - self.last_logged >= self.every:
            self.last_logged = now
            self.log(self.status(done, text, now))

    def clear(self):
        """Erase the terminal line (no blank line is left behind)."""
        if self.terminal:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class Interrupted(Exception):
    """SIGINT or SIGTERM, honoured between two steps (``StopRequests.check``)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum, self.name, self.exit_code = signum, signal.Signals(signum).name, 128 + signum


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM while there is nothing to save (``StopRequests``'
    ``at_once``): the program stops at once. ``doing`` says what it was doing.
    A KeyboardInterrupt, so that no ``except Exception`` (Theano has several
    while it compiles) can swallow it."""

    def __init__(self, signum, doing):
        super().__init__(signum)
        self.signum, self.name, self.exit_code = signum, signal.Signals(signum).name, 128 + signum
        self.doing = doing


class StopRequests:
    """SIGINT / SIGTERM set a flag the loop checks after each step, so the step
    in progress finishes and the run can save; a second signal stops at once
    (KeyboardInterrupt). ``notify(text)`` says so (default: stderr).

    While ``at_once`` is true (compiling, finishing: phases with nothing to
    save or that cannot wait), a signal raises ``Stopped`` at once, carrying
    ``doing``, the phase's name, for the program to say what to do next.
    """

    def __init__(self, notify=None, at_once=False, doing="working"):
        self.signum = None
        self.at_once, self.doing = at_once, doing
        self._previous = {}
        self._notify = notify or (lambda text: sys.stderr.write(text + "\n"))

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.at_once:
            raise Stopped(signum, self.doing)
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self._notify("\n%s received: finishing this step, then saving (press Ctrl-C again "
                     "to stop without saving)" % signal.Signals(signum).name)

    def check(self):
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def compute_threads():
    """Threads of engine.ops' C ops (OpenMP), recorded with each run. Their results
    do not depend on it (sums in a fixed order)."""
    # libgomp's default: the CPUs this process may run on (a container's cpuset
    # can allow fewer than os.cpu_count())
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def library_versions():
    """Versions of everything that decides a run's numbers."""
    import matplotlib
    import scipy
    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "theano": theano.__version__,
            "lasagne": getattr(lasagne, "__version__", "unknown"),
            "matplotlib": matplotlib.__version__,
            "theano_flags": {"floatX": theano.config.floatX,
                             "device": theano.config.device,
                             "blas.ldflags": theano.config.blas.ldflags,
                             "openmp": theano.config.openmp},
            "omp_threads": compute_threads(),
            "c_ops": layers.c_ops_apply(T.fvector())}


def git_state(folder):
    """The git commit of ``folder``'s checkout and whether its tracked files
    were modified, or None where there is no git checkout (an image)."""
    def git(*args):
        return subprocess.run(["git", "-C", folder] + list(args), capture_output=True,
                              text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "modified": bool(status.stdout.strip())}


def machine_description():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "host": platform.node(),
            "system": platform.platform()}
