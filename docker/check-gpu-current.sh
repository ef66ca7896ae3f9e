#!/usr/bin/env bash
# Builds the `gpu-current` image and checks it with the README's commands:
#   1. the image builds and runs as a non-root user;
#   2. pygpu, libgpuarray and the CUDA libraries they load at run time are
#      there and work, as far as they can without a GPU
#      (docker/gpu_current_libs.py: pygpu under the venv's numpy, every
#      NVRTC/cuBLAS function libgpuarray looks up, NVRTC compiling
#      libgpuarray's kernels for compute capability 7.0 to 9.0, Theano's GPU
#      op headers compiling);
#   3. a GPU run without a GPU ends with one line and exit status 1;
#   4. the CPU test suite passes inside the image (THEANO_FLAGS device=cpu;
#      the gpu tests skip, saying why);
#   5. where the engine can give the container a GPU (docker run --gpus all),
#      the `gpu` tests run on it; elsewhere this step is skipped, saying so.
#
#   bash docker/check-gpu-current.sh     # with docker, or podman if docker is absent
#
# On the development machine (no Docker engine, no registry) run first
#   source ../shared/tools/container-setup.sh
# Prints PASS/FAIL/SKIP lines and the time of each step; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
die() { echo "FAIL: $*"; failures=$((failures + 1)); echo "check: FAILED"; exit 1; }
started=$SECONDS
step_start() { step_t=$SECONDS; echo; echo "== $*"; }
took() { echo "$((SECONDS - step_t)) s"; }

# podman first where both are installed: the docker client talking to
# podman's API service reports exit status 0 for a `docker run --rm` whose
# command failed, and this check reads exit statuses.
if command -v podman >/dev/null 2>&1; then
  ENGINE=podman
  docker() { podman "$@"; }
  if ! podman image exists docker.io/library/debian:bookworm-slim \
      && [ -f "$ROOT/../shared/tools/container-setup.sh" ] && [ -z "${CONTAINERS_CONF:-}" ]; then
    die "podman has no debian:bookworm-slim here: run 'source ../shared/tools/container-setup.sh' first"
  fi
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  die "neither docker nor podman is installed"
fi
echo "engine: $ENGINE ($($ENGINE --version 2>/dev/null | head -1))"
WORK=$(mktemp -d /tmp/preresnet-check-gpu.XXXXXX)
# The logs stay when a step failed (or with KEEP_LOGS=1).
cleanup() {
  if [ "$failures" = 0 ] && [ "${KEEP_LOGS:-0}" != 1 ]; then rm -rf "$WORK"; else echo "logs: $WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
step_start "1. build"
if docker build --target gpu-current -t preresnet:gpu-current . >"$WORK/build.log" 2>&1; then
  size=$(docker image inspect preresnet:gpu-current --format '{{.Size}}')
  pass "docker build --target gpu-current ($(took), image $((size / 1000000)) MB)"
else
  tail -30 "$WORK/build.log"
  die "docker build --target gpu-current (log above)"
fi
user=$(docker run --rm preresnet:gpu-current id -u)
if [ "$user" != "" ] && [ "$user" != 0 ]; then
  pass "the container runs as uid $user, not root"
else
  fail "the container runs as uid '$user'"
fi

# ---------------------------------------------------------------------------
step_start "2. pygpu, libgpuarray and the CUDA libraries they load"
if docker run --rm preresnet:gpu-current python docker/gpu_current_libs.py >"$WORK/libs.log" 2>&1; then
  cat "$WORK/libs.log"
  pass "docker/gpu_current_libs.py ($(took))"
else
  cat "$WORK/libs.log"
  fail "docker/gpu_current_libs.py"
fi

# ---------------------------------------------------------------------------
# Does the engine give a container a GPU? Judged by what Theano prints, not
# only by the exit status.
gpu=no
docker run --rm --gpus all preresnet:gpu-current python -c "import engine, theano.gpuarray as g; print('GPU in use:', g.pygpu_activated)" \
  >"$WORK/probe.log" 2>&1
if grep -q "GPU in use: True" "$WORK/probe.log"; then
  gpu=yes
fi

step_start "3. a GPU run without a GPU"
if [ $gpu = yes ]; then
  echo "SKIP: the engine gives containers a GPU here (step 5 uses it)"
else
  docker run --rm preresnet:gpu-current python train_nn.py normal 1 --epochs 1 >"$WORK/nogpu.log" 2>&1
  code=$?
  cat "$WORK/nogpu.log"
  if [ $code = 1 ] && [ "$(wc -l <"$WORK/nogpu.log")" = 1 ] && grep -q "device=cuda" "$WORK/nogpu.log"; then
    pass "train_nn.py without a GPU: exit 1 with one line"
  else
    fail "train_nn.py without a GPU: exit $code, $(wc -l <"$WORK/nogpu.log") lines (expected 1 and 1)"
  fi
fi

# ---------------------------------------------------------------------------
step_start "4. the CPU test suite inside the image (cold Theano cache)"
docker run --rm -e THEANO_FLAGS=device=cpu,base_compiledir=/cache/theano preresnet:gpu-current python -m pytest -q -rs tests \
  >"$WORK/tests.log" 2>&1
code=$?
grep -E "^SKIPPED" "$WORK/tests.log"
tail -1 "$WORK/tests.log"
if [ $code = 0 ]; then
  pass "python -m pytest -q tests with device=cpu: $(grep -E '[0-9]+ passed' "$WORK/tests.log" | tail -1) ($(took))"
else
  tail -40 "$WORK/tests.log"
  fail "python -m pytest -q tests with device=cpu exited $code"
fi

# ---------------------------------------------------------------------------
step_start "5. the gpu tests on a GPU"
if [ $gpu = yes ]; then
  docker run --rm --gpus all preresnet:gpu-current python -m pytest -q -rs -m gpu tests/test_gpu.py \
    >"$WORK/gpu.log" 2>&1
  code=$?
  tail -15 "$WORK/gpu.log"
  if [ $code = 0 ] && ! grep -q "skipped" "$WORK/gpu.log"; then
    pass "the gpu tests on the GPU ($(took))"
  else
    fail "the gpu tests exited $code (or skipped)"
  fi
else
  echo "SKIP: no GPU here (docker run --gpus all: $(tail -1 "$WORK/probe.log" | cut -c1-160))"
fi

echo
if [ $failures = 0 ]; then
  echo "check: PASSED ($((SECONDS - started)) s)"
else
  echo "check: FAILED ($failures failure(s), $((SECONDS - started)) s)"
  exit 1
fi
