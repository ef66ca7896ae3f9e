#!/usr/bin/env bash
# Builds the `cpu` image and checks it with the README's Docker commands:
#   1. the image builds and runs as a non-root user;
#   2. the test suite passes inside it;
#   3. a one-epoch smoke run on real CIFAR-10 trains and test_model.py --run
#      evaluates its run folder, with data, runs and Theano's cache in named
#      volumes (a terminal allocated with -t, as for the progress display);
#   4. a run stopped with `docker stop` (SIGTERM) in one container is resumed
#      by a new container from the volumes, and ends with the same weights, bit
#      for bit, as a run that was never stopped;
#   5. the same programs run as an arbitrary uid (--user) on bind-mounted
#      host folders.
# The `gpu` target is not built: see the end of this script.
#
#   bash docker/check.sh                 # with docker, or podman if docker is absent
#
# On the development machine (no Docker engine, no registry) run first
#   source ../shared/tools/container-setup.sh
# CIFAR-10: CIFAR_DIR=<folder holding cifar-10-batches-py/>, else the images are
# built from ../shared/data (build_cifar10.py) when that exists. It uses the
# volumes preresnet-data, preresnet-runs and preresnet-theano, refuses to start
# if they exist (they may hold your runs) and removes them at the end
# (KEEP_VOLUMES=1 keeps them). Prints PASS/FAIL lines; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
die() { echo "FAIL: $*"; echo "check: FAILED"; exit 1; }
started=$SECONDS
step_start() { step_t=$SECONDS; echo; echo "== $*"; }
took() { echo "$((SECONDS - step_t)) s"; }

# The README's commands say `docker`; with podman they run through this alias.
# podman first: the docker client talking to podman's API was seen to report
# exit status 0 for a failing `docker run --rm`, which would hide failures here.
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

VOLUMES="preresnet-data preresnet-runs preresnet-theano"
for v in $VOLUMES; do
  if docker volume inspect "$v" >/dev/null 2>&1; then
    die "volume $v already exists and may hold your data or runs; remove it (docker volume rm $v) or keep it and run this check elsewhere"
  fi
done
WORK=$(mktemp -d /tmp/preresnet-check.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  docker rm -f preresnet-train >/dev/null 2>&1 || true
  if [ "${KEEP_VOLUMES:-0}" != 1 ]; then
    docker volume rm -f $VOLUMES >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
for v in $VOLUMES; do docker volume create "$v" >/dev/null || die "cannot create volume $v"; done

# ---------------------------------------------------------------------------
step_start "1. build"
if docker build --target cpu -t preresnet:cpu . >"$WORK/build.log" 2>&1; then
  size=$(docker image inspect preresnet:cpu --format '{{.Size}}')
  pass "docker build --target cpu ($(took), image $((size / 1000000)) MB)"
else
  tail -30 "$WORK/build.log"
  die "docker build --target cpu (log above)"
fi
user=$(docker run --rm preresnet:cpu id -u)
if [ "$user" != "" ] && [ "$user" != 0 ]; then
  pass "the container runs as uid $user, not root"
else
  fail "the container runs as uid '$user'"
fi
docker run --rm preresnet:cpu python -c "import engine, theano, lasagne, numpy, scipy, sys; print('python %s, theano %s, lasagne %s, numpy %s, scipy %s; THEANO_FLAGS=%s' % (sys.version.split()[0], theano.__version__, lasagne.__version__, numpy.__version__, scipy.__version__, __import__('os').environ['THEANO_FLAGS']))"

# ---------------------------------------------------------------------------
step_start "2. test suite inside the image (cold Theano cache)"
docker run --rm -v preresnet-theano:/cache/theano preresnet:cpu python -m pytest -q tests \
  >"$WORK/tests.log" 2>&1
code=$?
tail -3 "$WORK/tests.log"
if [ $code = 0 ]; then
  pass "python -m pytest -q tests: $(grep -E '[0-9]+ passed' "$WORK/tests.log" | tail -1) ($(took))"
else
  tail -40 "$WORK/tests.log"
  fail "python -m pytest -q tests exited $code"
fi

# ---------------------------------------------------------------------------
step_start "3. CIFAR-10 into the data volume, one-epoch smoke run, evaluation"
if [ -z "${CIFAR_DIR:-}" ]; then
  builder_dir=$(cd "$ROOT/../shared/data" 2>/dev/null && pwd)
  [ -n "$builder_dir" ] && [ -f "$builder_dir/build_cifar10.py" ] \
    || die "no CIFAR-10: set CIFAR_DIR to a folder holding cifar-10-batches-py/"
  CIFAR_DIR="$WORK/cifar"
  mkdir -p "$CIFAR_DIR"
  # The image has numpy and Pillow, which the builder needs.
  docker run --rm --user "$(id -u):$(id -g)" -v "$builder_dir:/shared:ro" -v "$CIFAR_DIR:/out" \
    preresnet:cpu python /shared/build_cifar10.py /out >"$WORK/cifar.log" 2>&1 \
    || { cat "$WORK/cifar.log"; die "building CIFAR-10 from $builder_dir"; }
  chmod -R a+rX "$CIFAR_DIR"
fi
[ -d "$CIFAR_DIR/cifar-10-batches-py" ] || die "$CIFAR_DIR holds no cifar-10-batches-py/"
docker run --rm -v "$CIFAR_DIR:/import:ro" -v preresnet-data:/app/data preresnet:cpu cp -r /import/cifar-10-batches-py data/ \
  && pass "CIFAR-10 copied into the volume preresnet-data" \
  || fail "copying CIFAR-10 into the volume"

step_t=$SECONDS
docker run --rm -t -v preresnet-data:/app/data -v preresnet-runs:/app/runs -v preresnet-theano:/cache/theano preresnet:cpu python train_nn.py normal 1 --epochs 1 --limit 2000 --out runs/smoke \
  >"$WORK/smoke.log" 2>&1
code=$?
grep -E "parameters|^ *(epoch|1) |final test error|weights:" "$WORK/smoke.log"
if [ $code = 0 ] && grep -q "final test error" "$WORK/smoke.log"; then
  pass "train_nn.py normal 1 --epochs 1 --limit 2000 ($(took))"
else
  tail -20 "$WORK/smoke.log"
  fail "train_nn.py smoke run exited $code"
fi

step_t=$SECONDS
docker run --rm -t -v preresnet-data:/app/data -v preresnet-runs:/app/runs -v preresnet-theano:/cache/theano preresnet:cpu python test_model.py --run runs/smoke \
  >"$WORK/test_model.log" 2>&1
code=$?
grep -E "test error|report:" "$WORK/test_model.log"
if [ $code = 0 ] && grep -q "^test error" "$WORK/test_model.log"; then
  pass "test_model.py --run runs/smoke ($(took))"
else
  tail -20 "$WORK/test_model.log"
  fail "test_model.py exited $code"
fi

# ---------------------------------------------------------------------------
step_start "4. docker stop in one container, --resume in a new one"
docker run -d --name preresnet-train -v preresnet-data:/app/data -v preresnet-runs:/app/runs -v preresnet-theano:/cache/theano preresnet:cpu python train_nn.py normal 1 --epochs 4 --limit 2000 --out runs/resume-check \
  >/dev/null || fail "starting the run to stop"
# Stop it once its first epoch is logged, i.e. in the middle of the second.
for _ in $(seq 600); do
  docker logs preresnet-train 2>&1 | grep -qE '^ +1 +[0-9.]+ ' && break
  [ "$(docker inspect -f '{{.State.Running}}' preresnet-train 2>/dev/null)" = true ] || break
  sleep 1
done
docker stop -t 60 preresnet-train >/dev/null
stop_code=$(docker inspect -f '{{.State.ExitCode}}' preresnet-train)
docker logs preresnet-train >"$WORK/stopped.log" 2>&1
docker rm preresnet-train >/dev/null
grep -E "^ +[0-9]+ +[0-9.]+ |saved|stopping|SIGTERM" "$WORK/stopped.log"
if [ "$stop_code" = 143 ] && grep -q "resume with" "$WORK/stopped.log"; then
  pass "docker stop: the run saved its checkpoint and exited 143"
else
  tail -20 "$WORK/stopped.log"
  fail "docker stop: exit code $stop_code (expected 143 after saving a checkpoint)"
fi

step_t=$SECONDS
docker run --rm -v preresnet-data:/app/data -v preresnet-runs:/app/runs -v preresnet-theano:/cache/theano preresnet:cpu python train_nn.py --resume runs/resume-check \
  >"$WORK/resumed.log" 2>&1
code=$?
grep -E "resuming|^ +[0-9]+ +[0-9.]+ |final test error" "$WORK/resumed.log"
if [ $code = 0 ] && grep -q "resuming" "$WORK/resumed.log" && grep -q "final test error" "$WORK/resumed.log"; then
  pass "train_nn.py --resume in a new container finished the run ($(took))"
else
  tail -20 "$WORK/resumed.log"
  fail "train_nn.py --resume exited $code"
fi

# The same run never stopped, for comparison.
docker run --rm -v preresnet-data:/app/data -v preresnet-runs:/app/runs -v preresnet-theano:/cache/theano preresnet:cpu python train_nn.py normal 1 --epochs 4 --limit 2000 --out runs/reference-check \
  >"$WORK/reference.log" 2>&1 || fail "the uninterrupted reference run"
compare='
import numpy as np
a = np.load("runs/resume-check/weights_final.npz", allow_pickle=False)
b = np.load("runs/reference-check/weights_final.npz", allow_pickle=False)
keys = [k for k in a.files if a[k].dtype.kind == "f"]
assert keys and sorted(a.files) == sorted(b.files), (a.files, b.files)
diff = [k for k in keys if not np.array_equal(a[k], b[k])]
print("%d float arrays compared, %d differ" % (len(keys), len(diff)))
raise SystemExit(1 if diff else 0)'
if docker run --rm -v preresnet-runs:/app/runs preresnet:cpu python -c "$compare"; then
  pass "stopped + resumed run ends with the same weights, bit for bit, as the uninterrupted run"
else
  fail "stopped + resumed run's weights differ from the uninterrupted run's"
fi

mkdir -p "$WORK/export"
if (cd "$WORK/export" && docker run --rm --user "$(id -u):$(id -g)" -v preresnet-runs:/app/runs -v "$PWD:/out" preresnet:cpu cp -r runs/resume-check /out/ ) \
    && [ -f "$WORK/export/resume-check/weights_final.npz" ]; then
  pass "the run folder copied out of the volume: $(ls "$WORK/export/resume-check" | tr '\n' ' ')"
else
  fail "copying the run folder out of the volume"
fi

# ---------------------------------------------------------------------------
step_start "5. --user with bind-mounted host folders (an arbitrary uid, 4242)"
mkdir -p "$WORK/host/data" "$WORK/host/runs" "$WORK/host/theano"
cp -r "$CIFAR_DIR/cifar-10-batches-py" "$WORK/host/data/"
chown -R 4242:4242 "$WORK/host" 2>/dev/null || chmod -R a+rwX "$WORK/host"
docker run --rm --user 4242:4242 -v "$WORK/host/data:/app/data" -v "$WORK/host/runs:/app/runs" -v "$WORK/host/theano:/cache/theano" preresnet:cpu python train_nn.py normal 1 --epochs 1 --limit 500 --out runs/as-4242 \
  >"$WORK/user.log" 2>&1
code=$?
if [ $code = 0 ] && [ -f "$WORK/host/runs/as-4242/weights_final.npz" ] \
    && [ "$(stat -c %u "$WORK/host/runs/as-4242/weights_final.npz")" = 4242 ]; then
  pass "train_nn.py as uid 4242 wrote its run to the host folder, owned by 4242 ($(took))"
else
  tail -20 "$WORK/user.log"
  fail "train_nn.py as uid 4242 on bind mounts (exit $code)"
fi

# ---------------------------------------------------------------------------
echo
echo "SKIP: the gpu target is not built here (no GPU, no access to Docker Hub, NVIDIA's"
echo "      repositories or conda channels); tests/test_dockerfile.py, run in step 2,"
echo "      checks that its versions are pinned"
echo
if [ $failures = 0 ]; then
  echo "check: PASSED ($((SECONDS - started)) s)"
else
  echo "check: FAILED ($failures failure(s), $((SECONDS - started)) s)"
  exit 1
fi
