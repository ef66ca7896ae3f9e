"""Make Theano 1.0.5 and Lasagne (PyPI 0.1 or GitHub master) work on today's Python.

Import this module before anything imports Theano or Lasagne (``models.py``,
``train_nn.py`` and ``test_model.py`` do). It

1. configures Theano through ``THEANO_FLAGS`` *before* ``import theano``:
   ``floatX=float32`` and a BLAS library to link against, unless the user's
   ``THEANO_FLAGS`` or ``.theanorc`` already set them, and a compile folder of
   this project's own that only this user can write to (Theano runs the code
   it finds there). Theano's own BLAS probe
   reads ``numpy.distutils.__config__.blas_opt_info``, which numpy 1.23 no
   longer has, so without an explicit ``blas.ldflags`` it crashes;
2. raises Python's recursion limit, because ``theano.grad`` recurses once per
   layer and PreResNet-110/164 go deeper than the default 1000 (the old
   repository set 10000 for the same reason);
3. gives Lasagne 0.1 the module ``theano.tensor.signal.downsample`` it imports
   (Theano 1.0 renamed it ``pool``). Lasagne master never imports that name, so
   the shim is inert there;
4. tells glibc to keep freed memory for reuse (see ``keep_freed_memory``);
5. when Theano's device is a GPU, ends the program with one line if no GPU
   can be used (``GpuUnavailable``), instead of Theano's traceback and a
   silent fall-back to the CPU;
6. replaces Theano's compile-lock messages (repeated INFO lines that advise
   deleting a lock whose owner may be alive) with one line of ours per
   program waited for (``compile_lock_waits``);
7. leaves a missing C++ compiler to ``check_compiler``'s one line: Theano's
   own warnings about it ("g++ not detected ... set Theano flags cxx to an
   empty string") advise the opposite of what this project needs.

Nothing else: the layers Lasagne 0.1 lacks live in ``engine.layers``.
"""
import configparser
import ctypes
import ctypes.util
import glob
import importlib.util
import logging
import os
import re
import socket
import stat
import sys
import tempfile
import time
import types
import warnings

RECURSION_LIMIT = 10000


def _user_theano_settings():
    """Config values the user set, in a ``.theanorc`` or ``THEANO_FLAGS`` (which
    wins), keyed in Theano's dotted form, lower case (``blas.ldflags``)."""
    settings = {}
    default_rc = os.pathsep.join(
        os.path.expanduser(p) for p in ("~/.theanorc", "~/.theanorc.txt"))
    for path in os.environ.get("THEANORC", default_rc).split(os.pathsep):
        if not os.path.isfile(path):
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue  # Theano itself will complain about a broken file
        for section in parser.sections():
            for key, value in parser[section].items():
                name = key if section == "global" else section + "." + key
                settings[name.lower()] = value
    for item in os.environ.get("THEANO_FLAGS", "").split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            settings[key.strip().replace("__", ".").lower()] = value.strip()
    return settings


def find_blas_ldflags():
    """Linker flags for an OpenBLAS Theano can use, or None.

    A system ``libopenblas`` (Debian's ``libopenblas-dev``) is preferred; else
    the copy scipy's wheel bundles in ``site-packages/scipy.libs``, which
    exports the standard Fortran symbols (``sgemm_``) Theano calls. Theano adds
    ``-Wl,-rpath`` for every ``-L`` directory itself.
    """
    if ctypes.util.find_library("openblas"):
        return "-lopenblas"
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.origin:
        return None
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(spec.origin)),
                            "scipy.libs")
    candidates = sorted(glob.glob(os.path.join(libs_dir, "libopenblas*.so*")))
    if not candidates:
        return None
    return "-L%s -l:%s" % (libs_dir, os.path.basename(candidates[0]))


def _is_private(folder):
    """True if ``folder`` is a directory of this user that no one else may
    write to; creates it (mode 0700) if it does not exist."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        status = os.stat(folder)
    except OSError:
        return False
    return (stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid()
            and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def project_compile_folder():
    """This project's own compile folder: ``$XDG_CACHE_HOME/preresnet-theano``
    (``~/.cache/preresnet-theano``)."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(cache, "preresnet-theano")


def private_compile_folder(configured):
    """The ``base_compiledir`` Theano should use, or None to keep the one the
    user configured.

    Theano loads the compiled modules it finds in its compile folder, and
    unpickles the keys stored next to them: whatever is there runs in this
    process. So by default Theano compiles into a folder of this project's
    own (``project_compile_folder``), where only what this project compiled
    lies, instead of the ``~/.theano`` every Theano program shares. A folder
    the user configures is used if it belongs to this user and nobody else can
    write to it; otherwise Theano compiles into a private folder and a warning
    says so.
    """
    if configured and _is_private(configured):
        return None
    fallback = os.path.join(tempfile.gettempdir(), "preresnet-theano-%d" % os.getuid())
    for candidate in (project_compile_folder(), fallback):
        if _is_private(candidate):
            if configured:
                warnings.warn("Theano's compile folder %s is not private to this user "
                              "(others could plant code that Theano would load): "
                              "compiling into %s instead" % (configured, candidate))
            return candidate
    raise RuntimeError("no private folder for Theano's compiled code: neither %s nor %s "
                       "(set base_compiledir in THEANO_FLAGS to a folder only you can "
                       "write)" % (project_compile_folder(), fallback))


def configure_theano():
    """Write this project's Theano defaults into ``THEANO_FLAGS``.

    Does nothing once Theano is imported (its configuration is then fixed).
    """
    if "theano" in sys.modules:
        return
    user = _user_theano_settings()
    ours = []
    if "floatx" not in user:
        ours.append("floatX=float32")
    if "blas.ldflags" not in user:
        ldflags = find_blas_ldflags()
        if ldflags is None:
            warnings.warn("no OpenBLAS found (neither a system libopenblas nor "
                          "scipy's bundled copy): Theano will run without BLAS, "
                          "much slower. Install libopenblas-dev to fix.")
            ldflags = ""
        ours.append("blas.ldflags=" + ldflags)
    private = private_compile_folder(user.get("base_compiledir"))
    if private:
        ours.append("base_compiledir=" + private)
    if ours:
        existing = os.environ.get("THEANO_FLAGS", "").strip(",")
        os.environ["THEANO_FLAGS"] = ",".join(([existing] if existing else []) + ours)


def _shim_lasagne_01():
    """Provide ``theano.tensor.signal.downsample.max_pool_2d`` for Lasagne 0.1."""
    import theano.tensor.signal
    from theano.tensor.signal import pool
    if hasattr(theano.tensor.signal, "downsample"):
        return
    module = types.ModuleType("theano.tensor.signal.downsample")

    def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0),
                    mode="max"):
        return pool.pool_2d(input, ws=ds, ignore_border=ignore_border,
                            stride=st, pad=padding, mode=mode)

    module.max_pool_2d = max_pool_2d
    sys.modules[module.__name__] = module
    theano.tensor.signal.downsample = module


def _drop_blas_library_warning(record):
    """Theano warns that ``-l:libopenblasp-....so`` (scipy's copy, named by
    file) is "not a dynamic library": its check only understands ``-lname``.
    The library links and runs fine, so the warning would only mislead."""
    return "did not find a dynamic library" not in record.getMessage()


class MissingCompiler(RuntimeError):
    """Theano cannot compile: no C++ compiler or no Python headers."""


def check_compiler():
    """Raise MissingCompiler, saying what to install, where Theano cannot
    compile its C code (it would fail later with a traceback from deep inside,
    e.g. ``MethodNotDefined: perform``)."""
    import sysconfig
    missing, packages = [], []
    if not theano.config.cxx:
        missing.append("g++ (the GNU C++ compiler)")
        packages.append("g++")
    if not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        version = "%d.%d" % sys.version_info[:2]
        missing.append("Python %s's headers (Python.h)" % version)
        packages.append("python%s-dev" % version)
    if missing:
        raise MissingCompiler(
            "Theano compiles C++ code and needs %s: install %s (Debian/Ubuntu: sudo apt-get "
            "install %s) and run again" % (" and ".join(missing),
                                           "them" if len(missing) > 1 else "it",
                                           " ".join(packages)))


def _drop_missing_compiler_warning(record):
    """Theano's "g++ not detected ! ... To remove this warning, set Theano
    flags cxx to an empty string": ``check_compiler`` says what to do."""
    return not record.getMessage().startswith("g++ not detected")


class _CompileLockWaits(logging.Filter):
    """Theano's compile lock (theano.gof.compilelock) logs, each time it waits
    for a lock held by another process, "Waiting for existing lock by process
    '123' (I am process '456')" and "To manually release the lock, delete
    .../lock_dir", at INFO level, which Theano shows: a program evaluating
    beside a training run that compiles prints them again and again, and the
    advice would break the other program while it is alive. Instead, ``say``
    (stderr unless a program sets it) gets one line per process waited for,
    naming it and since when this program waits; the lock's other INFO lines
    are dropped, and its warnings about taking over a lock are said in our
    words."""

    WAITING = re.compile(r"Waiting for existing lock by (?:process '(\d+)'|(unknown process))")
    OVERRIDING = re.compile(r"Overriding existing lock by (dead )?(?:process '(\d+)'|"
                            r"unknown process)")

    def __init__(self):
        super().__init__()
        self.say = lambda text: print(text, file=sys.stderr, flush=True)
        self.told = set()

    def filter(self, record):
        message = record.getMessage()
        waiting = self.WAITING.match(message)
        if waiting:
            holder = waiting.group(1) or "unknown"
            if holder not in self.told:
                self.told.add(holder)
                self.say("waiting since %s for Theano's compile lock, held by %s; this "
                         "program goes on when it is released"
                         % (time.strftime("%H:%M:%S"), self.describe(holder)))
            return False
        overriding = self.OVERRIDING.match(message)
        if overriding:
            dead, holder = overriding.group(1), overriding.group(2) or "unknown"
            self.say("taking over Theano's compile lock from %s, %s" % (
                self.describe(holder), "which has ended" if dead else
                "which has held it for over %d s without a sign of life (compile.timeout)"
                % _theano_config().compile.timeout))
            return False
        return record.levelno > logging.INFO  # "Refreshing lock", "To manually release"

    @staticmethod
    def describe(pid):
        """``process 123 (python train_nn.py normal 18)``, or on another host
        (a compile folder shared over the network) ``process 123 on host h``."""
        if pid == "unknown":
            return "a process that cannot be told (its lock file is unreadable)"
        try:
            with open(os.path.join(_theano_config().compiledir, "lock_dir", "lock")) as f:
                host = f.readline().strip().split("_", 2)[2]
        except (OSError, IndexError, AttributeError):
            host = socket.gethostname()
        if host != socket.gethostname():
            return "process %s on host %s" % (pid, host)
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                command = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            return "process %s" % pid
        if len(command) > 100:
            command = command[:97] + "..."
        return "process %s (%s)" % (pid, command) if command else "process %s" % pid


def _theano_config():
    # sys.modules: the compile lock is also taken while ``import theano`` runs
    return sys.modules["theano"].config


compile_lock_waits = _CompileLockWaits()


def keep_freed_memory():
    """Ask glibc to serve every allocation from its heap and never give freed
    memory back to the system.

    A training step allocates hundreds of activation arrays of megabytes and
    frees them at the end; by default glibc maps each large one afresh, so the
    next step pays a page fault (and the kernel's zeroing) for every 4 KB page
    it writes. Measured on PreResNet-110 at batch 128 on the development
    machine: 2.09 s a training step by default, 1.90 s with this, the same
    peak memory (the heap is reused; it is returned when the process ends).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, -1)


# -----------------------------------------------------------------------------
# GPU set-up: only acts when Theano's device (or init_gpu_device, or contexts)
# names a GPU.

GPU_DEVICE_PREFIXES = ("cuda", "opencl")


class GpuUnavailable(SystemExit):
    """Theano was asked for a GPU and could not use one. A SystemExit whose
    code is a one-line message: uncaught, Python prints it and exits 1."""


class _GpuInitFailure(logging.Filter):
    """Holds back the error Theano logs, traceback and all, when pygpu cannot
    be imported or cannot initialise the GPU (Theano then carries on on the
    CPU); ``_require_gpu`` reports it in one line instead."""

    MESSAGES = ("Could not initialize pygpu",
                "pygpu was configured but could not be imported")

    def __init__(self):
        super().__init__()
        self.reason = None

    def filter(self, record):
        if not record.getMessage().startswith(self.MESSAGES):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            self.reason = ("pygpu, Theano's GPU backend, is not installed "
                           "(the gpu-current Docker image has it)")
        else:
            text = error.args[0] if len(error.args) == 1 else str(error)
            if isinstance(text, bytes):  # pygpu's messages are bytes
                text = text.decode("utf-8", "replace")
            text = " ".join(str(text).split()) or type(error).__name__
            self.reason = text[:300] + "..." if len(text) > 300 else text
        return False


def _watch_gpu_init():
    """Before ``import theano``: catch Theano's GPU initialisation error."""
    failure = _GpuInitFailure()
    logging.getLogger("theano.gpuarray").addFilter(failure)
    return failure


def _gpu_requested(config):
    return (config.device.startswith(GPU_DEVICE_PREFIXES)
            or config.init_gpu_device.startswith(GPU_DEVICE_PREFIXES)
            or bool(config.contexts))


def _require_gpu(failure):
    """After ``import theano``: if the configuration asks for a GPU and
    Theano could not set one up, raise ``GpuUnavailable`` with one line."""
    import theano
    if not _gpu_requested(theano.config):
        return
    gpuarray = sys.modules.get("theano.gpuarray")
    if gpuarray is not None and getattr(gpuarray, "pygpu_activated", False):
        return
    config = theano.config
    if config.device.startswith(GPU_DEVICE_PREFIXES):
        asked = "device=" + config.device
    elif config.init_gpu_device.startswith(GPU_DEVICE_PREFIXES):
        asked = "init_gpu_device=" + config.init_gpu_device
    else:
        asked = "contexts=" + config.contexts
    raise GpuUnavailable(
        "Theano's configuration asks for a GPU (%s), but Theano could not use one: %s. "
        "Run where an NVIDIA GPU and its driver are visible (containers: "
        "docker run --gpus all ..., apptainer exec --nv ...), or set "
        "THEANO_FLAGS=device=cpu." % (asked, failure.reason or "unknown reason"))


configure_theano()
logging.getLogger("theano.tensor.blas").addFilter(_drop_blas_library_warning)
logging.getLogger("theano.configdefaults").addFilter(_drop_missing_compiler_warning)
logging.getLogger("theano.gof.compilelock").addFilter(compile_lock_waits)
sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
_gpu_init_failure = _watch_gpu_init()
with warnings.catch_warnings():
    # Theano 1.0.5 on Python 3.11 warns about its own deprecated imports, and
    # (a UserWarning) that a missing compiler "is deprecated": check_compiler;
    # with device=cuda its gpuarray package imports pkg_resources (see below).
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.filterwarnings("ignore", message="DeprecationWarning: there is no c\\+\\+ compiler")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import theano  # noqa: E402
_require_gpu(_gpu_init_failure)
_shim_lasagne_01()
with warnings.catch_warnings():
    # Lasagne 0.1 reads its version through pkg_resources, which setuptools
    # 80 (the version bench/requirements.txt needs beside PyTorch) warns about.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import lasagne  # noqa: E402,F401
