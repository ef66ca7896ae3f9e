"""Theano's CUDA train and eval functions (the gpu-current image on an NVIDIA GPU).

Tests marked ``gpu`` need Theano's GPU backend (pygpu) and a visible NVIDIA
GPU; elsewhere they skip and say which is missing. Each runs
tests/gpu_worker.py in processes of its own, one on the GPU
(``device=cuda``) and, for the comparison, one on the CPU (``device=cpu``),
so the process running pytest may have any device. On a GPU machine:

    docker run --rm --gpus all preresnet:gpu-current python -m pytest -q -m gpu tests/test_gpu.py

The test without the mark checks what a GPU run does where there is no GPU.
"""
import csv
import ctypes
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT_DIR, make_images, run_cli, write_tiny_cifar10

WORKER = os.path.join(PROJECT_DIR, "tests", "gpu_worker.py")

pytestmark = pytest.mark.slow  # every test runs programs in subprocesses


@functools.lru_cache(maxsize=None)
def gpu_missing():
    """Why no GPU can be used here, or None if one can. Cheap: the driver
    library is asked for its devices; no Theano, nothing compiled."""
    try:
        import pygpu  # noqa: F401
    except ImportError:
        return "pygpu (Theano's GPU backend) is not installed: run in the gpu-current image"
    cuda = None
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if cuda is None:
        return ("no NVIDIA driver: libcuda.so.1 cannot be loaded (containers: "
                "docker run --gpus all, apptainer --nv)")
    status = cuda.cuInit(0)
    if status != 0:
        return "no GPU visible: cuInit returned CUDA error %d" % status
    count = ctypes.c_int(0)
    status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return "no GPU visible: cuDeviceGetCount found %d (CUDA error %d)" % (count.value, status)
    return None


@pytest.fixture
def gpu():
    reason = gpu_missing()
    if reason:
        pytest.skip(reason)


def flags(device):
    """The environment's THEANO_FLAGS with the device set (a later entry
    wins); on the GPU without cuDNN, as in the gpu-current image."""
    extra = "device=cuda,dnn.enabled=False" if device == "cuda" else "device=cpu"
    existing = os.environ.get("THEANO_FLAGS", "").strip(",")
    return ",".join(([existing] if existing else []) + [extra])


def work(device, *args, timeout=1800):
    env = dict(os.environ, THEANO_FLAGS=flags(device))
    result = subprocess.run([sys.executable, WORKER] + [str(a) for a in args],
                            cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


# =============================================================================
# On a GPU


@pytest.mark.gpu
def test_preresnet20_train_and_eval_functions_compile_on_the_gpu(gpu, tmp_path):
    work("cuda", "compile", tmp_path / "compile.json")
    report = json.loads((tmp_path / "compile.json").read_text())
    assert report["device"].startswith("cuda")
    for name in ("train", "eval"):
        function = report[name]
        # Theano's own GPU convolutions (no cuDNN), every activation-sized
        # result on the GPU, and none of the project's CPU C ops.
        assert function["convolutions"] and all(
            op.startswith("GpuCorrMM") for op in function["convolutions"]), function
        assert function["host_4d"] == [], function
        assert function["project_c_ops"] == [], function
        assert function["gpu_ops"] > function["ops"] // 2, function
    assert set(report["train"]["convolutions"]) == {
        "GpuCorrMM", "GpuCorrMM_gradWeights", "GpuCorrMM_gradInputs"}
    assert np.isfinite(report["loss"])
    assert np.allclose(report["eval_row_sums"], 1, atol=1e-5)


@pytest.mark.gpu
def test_one_training_step_on_the_gpu_matches_the_cpu(gpu, tmp_path):
    images, labels = make_images(32, 7)
    np.savez(tmp_path / "batch.npz",
             images=(images / np.float32(255) - np.float32(0.5)).astype(np.float32),
             labels=labels.astype(np.int32))
    init, batch = tmp_path / "init.npz", tmp_path / "batch.npz"
    work("cpu", "step", init, batch, tmp_path / "cpu.npz", "--save-init")
    work("cuda", "step", init, batch, tmp_path / "gpu.npz")
    with np.load(init) as start, np.load(tmp_path / "cpu.npz") as cpu, \
            np.load(tmp_path / "gpu.npz") as gpu_result:
        assert gpu_result["loss"] == pytest.approx(float(cpu["loss"]), rel=1e-4)
        assert np.allclose(gpu_result["probabilities"], cpu["probabilities"], atol=1e-4)
        count = len(start.files)
        assert count > 50  # PreResNet-20: convolutions, batch norms, the classifier
        for i in range(count):
            before = start["arr_%d" % i]
            step_cpu = cpu["param_%d" % i] - before
            step_gpu = gpu_result["param_%d" % i] - before
            # float32: the two devices sum in different orders
            scale = max(float(np.abs(step_cpu).max()), 1e-6)
            assert np.abs(step_gpu - step_cpu).max() <= 2e-3 * scale + 1e-6, i


@pytest.mark.gpu
def test_a_short_run_trains_on_the_gpu(gpu, tmp_path):
    work("cuda", "train", 15, tmp_path / "train.json")
    report = json.loads((tmp_path / "train.json").read_text())
    losses = report["losses"]
    assert report["device"].startswith("cuda")
    assert all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:2]), losses


@pytest.mark.gpu
def test_train_nn_on_the_gpu_writes_the_usual_run_folder(gpu, tmp_path):
    data = tmp_path / "data"
    write_tiny_cifar10(data)
    run = tmp_path / "run"
    result = run_cli("train_nn.py", "normal", 1, "--epochs", 2, "--batch-size", 50,
                     "--data-dir", data, "--out", run,
                     env=dict(os.environ, THEANO_FLAGS=flags("cuda")))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "final test error" in result.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["source"]["versions"]["theano_flags"]["device"].startswith("cuda")
    assert config["source"]["versions"]["c_ops"] is False  # the CPU ops never run there
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(np.isfinite(float(row["train_loss"])) for row in rows)
    assert all(0 <= float(row["test_error"]) <= 100 for row in rows)
    with np.load(run / "weights_final.npz", allow_pickle=False) as weights:
        assert json.loads(str(weights["network"]))["name"] == "preresnet8"
        params = [weights[key] for key in sorted(weights.files) if key.startswith("param_")]
    assert len(params) > 30 and all(np.isfinite(p).all() for p in params)
    # The GPU-trained weights, evaluated on the CPU: the test error the GPU
    # logged, within float32's rounding of a borderline image or two.
    report = tmp_path / "cpu-report.json"
    tested = run_cli("test_model.py", "--run", run, "--data-dir", data, "--out", report,
                     env=dict(os.environ, THEANO_FLAGS=flags("cpu")))
    assert tested.returncode == 0, tested.stderr[-4000:]
    error = json.loads(report.read_text())["error"]
    assert abs(error - float(rows[-1]["test_error"])) <= 2.0, (error, rows[-1])


# =============================================================================
# Where no GPU is visible


def test_a_gpu_run_without_a_gpu_ends_with_one_line(tmp_path):
    if gpu_missing() is None:
        pytest.skip("a GPU is visible here")
    env = dict(os.environ, THEANO_FLAGS=flags("cuda"),
               THEANORC=str(tmp_path / "no-theanorc"))
    result = subprocess.run([sys.executable, "-c", "import engine; print('imported')"],
                            cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "device=cuda" in lines[0] and "THEANO_FLAGS=device=cpu" in lines[0]
    assert "Traceback" not in result.stderr
