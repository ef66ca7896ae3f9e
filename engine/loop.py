"""Pieces of a training loop that Theano and Lasagne do not provide.

- ``Prefetcher``: builds the next batches in a worker thread while the
  compiled step runs (the C ops release the GIL), in order and independent of
  timing.
- ``Progress``: a one-line progress display on a terminal.
- ``StopRequests`` / ``Interrupted``: SIGINT and SIGTERM stop a loop between
  two steps, so that it can save first.
- ``compute_threads``, ``library_versions``, ``machine_description``: what a
  run records about where it ran.
"""
import os
import platform
import queue
import signal
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


class Progress:
    """A one-line progress display on stderr, redrawn at most twice a second
    (only when stderr is a terminal: logs stay clean)."""

    def __init__(self, label, total):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()
        self.start = self.last = time.time()

    def update(self, done, text=""):
        now = time.time()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        width = 24
        filled = int(width * done / max(self.total, 1))
        sys.stderr.write("\r%s [%s%s] %d/%d %s %.0fs " % (
            self.label, "=" * filled, " " * (width - filled), done, self.total, text,
            now - self.start))
        sys.stderr.flush()

    def clear(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.exit_code = 128 + signum


class StopRequests:
    """SIGINT / SIGTERM set a flag the loop checks after each step, so the step
    in progress finishes and the run can save; a second signal stops at once."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        sys.stderr.write("\n%s received: finishing this step, then saving (press "
                         "Ctrl-C again to stop without saving)\n"
                         % signal.Signals(signum).name)

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
