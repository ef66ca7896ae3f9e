"""Every program that runs training steps keeps freed memory for reuse
(engine.compat.keep_freed_memory), checked by what glibc does, not by timing.

Without the setting glibc maps each large array afresh and the next step
page-faults on all of them: bench/speed.py's comparison child once lost the
call and timed WRN-16-4 at 95 img/s where train_nn.py ran 155 (docs/speed.md,
run 9). Each program runs in a process of its own up to the point where it
would compile its step; there a probe asks glibc (mallinfo2) whether a
64 MB allocation was served by a fresh mapping, and the process stops."""
import ctypes
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_DIR, write_tiny_cifar10

PROBE = r'''
import ctypes, sys
sys.path.insert(0, %(project)r)
sys.path.insert(0, %(bench)r)


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def freed_memory_kept():
    """Whether glibc serves a large allocation from its heap (the setting on)
    rather than from a mapping of its own (returned to the system on free)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    mapped = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return mapped == 0


class Reached(BaseException):
    pass


def probe(*args, **kwargs):
    print("KEPT %%s" %% freed_memory_kept(), flush=True)
    raise Reached()


%(setup)s
try:
    run()
except Reached:
    pass
'''

# program: (what to replace with the probe, how to start it)
PROGRAMS = {
    "train_nn.py": ("import train_nn\ntrain_nn.compile_training_step = probe\n"
                    "def run():\n    train_nn.main(['normal', '1', '--data-dir', %(data)r, "
                    "'--out', %(out)r])"),
    "bench/speed.py child": (
        "import train_nn, speed\ntrain_nn.compile_training_step = probe\n"
        "def run():\n    speed.child({'impl': 'ours', 'variant': 'normal', 'depth': 1, "
        "'width': 1, 'steps': 1, 'pairs': 0, 'eval_images': 10, 'eval_images_plain': 1})"),
    "bench/speed.py live": (
        "import train_nn, speed\ntrain_nn.compile_training_step = probe\n"
        "def run():\n    speed.live_ours({'variant': 'normal', 'depth': 1, 'width': 1, "
        "'eval_images': 10, 'algo': 'auto'})"),
    "bench/speed.py --quick": (
        "import networks, speed\nspeed.sgemm_timer = lambda: None\n"
        "networks.paper_training_step = probe\n"
        "def run():\n    speed.quick(['normal 1'], 1, 1)"),
    "bench/network_ab.py": (
        "import networks, network_ab\nnetworks.paper_training_step = probe\n"
        "def run():\n    sys.argv = ['network_ab.py', 'normal 1']\n    network_ab.main()"),
    "bench/profile_step.py": (
        "import networks, profile_step\nnetworks.paper_training_step = probe\n"
        "def run():\n    sys.argv = ['profile_step.py', 'normal 1']\n    profile_step.main()"),
    "bench/ops_ab.py": (
        "import ops_ab\nops_ab.load_other_engine = probe\n"
        "def run():\n    sys.argv = ['ops_ab.py', '.']\n    ops_ab.main()"),
}


def glibc_has_mallinfo2():
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not glibc_has_mallinfo2(),
                                reason="needs glibc 2.33 or later (mallinfo2)")


def run_probe(setup, tmp_path):
    script = PROBE % {"project": PROJECT_DIR, "bench": os.path.join(PROJECT_DIR, "bench"),
                      "setup": setup}
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=600)
    kept = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("KEPT ")]
    assert done.returncode == 0 and len(kept) == 1, done.stdout[-2000:] + done.stderr[-3000:]
    return kept[0] == "True"


def test_the_probe_tells_the_setting_on_from_off(tmp_path):
    """A fresh process maps large blocks; after keep_freed_memory it does not."""
    assert not run_probe("def run():\n    probe()", tmp_path)
    assert run_probe("from engine import compat\ncompat.keep_freed_memory()\n"
                     "def run():\n    probe()", tmp_path)


# The quick loop probes train_nn.py; the bench programs run in the full suite.
@pytest.mark.parametrize("program", [
    pytest.param(name, marks=[] if name == "train_nn.py" else [pytest.mark.slow])
    for name in sorted(PROGRAMS)])
def test_program_keeps_freed_memory_when_it_runs_its_step(program, tmp_path):
    data = write_tiny_cifar10(tmp_path / "data", per_batch=10, test_count=10)
    setup = PROGRAMS[program] % {"data": os.path.dirname(data), "out": str(tmp_path / "run")}
    assert run_probe(setup, tmp_path), "%s runs its step without keep_freed_memory" % program
