# Pre-activation ResNets / Wide ResNets on CIFAR in Theano + Lasagne: three images.
#
#   docker build --target cpu -t preresnet:cpu .                   # Debian 12, Python 3.11, requirements.txt
#   docker build --target gpu-current -t preresnet:gpu-current .   # the same + libgpuarray, CUDA 11.8 NVRTC/cuBLAS
#   docker build --target gpu -t preresnet:gpu .                   # Ubuntu 18.04, CUDA 10.0, cuDNN 7.6.5, Python 3.8
#
# All run `python train_nn.py ...` / `python test_model.py ...` exactly as on a
# host, as an unprivileged user (uid 1000), in /app. Three folders are volumes,
# so a stopped container's run can be resumed by a new one:
#   /app/data      CIFAR (downloaded there on first use) and published weights
#   /app/runs      run folders (checkpoints, logs, weights)
#   /cache/theano  Theano's compiled C code (base_compiledir)
# Nothing is downloaded at run time except the dataset. See README.md, "Docker".
#
# The `cpu` target is built and run by docker/check.sh, the `gpu-current`
# target by docker/check-gpu-current.sh (everything that can be checked
# without a GPU; its `gpu` tests need one). The legacy `gpu` target is written
# to the same standard but has never been built: the machine this project is
# developed on has no GPU and reaches no image registry, NVIDIA server or
# conda channel. tests/test_dockerfile.py checks that every version below is
# pinned and, for the gpu target, what it can of their compatibility.

# ----------------------------------------------------------------------------
# cpu: the host install, in a container. `FROM debian:bookworm-slim` follows
# Debian 12's point releases (security fixes; same Python 3.11, g++ 12); what
# fixes the numbers is requirements.txt, installed exactly as on a host.
FROM debian:bookworm-slim AS cpu

# g++ and the Python headers: Theano compiles C code at run time.
# tini: PID 1 that forwards `docker stop`'s SIGTERM to Python, whose handler
# saves a checkpoint (exit 143). No libopenblas: like a host install,
# compat.py links Theano to the OpenBLAS bundled in scipy's wheel.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates g++ python3 python3-dev python3-venv tini \
 && rm -rf /var/lib/apt/lists/*

COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project: read-only for the user; data/, runs/ and the Theano cache are
# the user's (uid 1000, or any uid given with --user when they are bind mounts).
COPY . /app
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp runner \
 && mkdir -p /app/data/weights /app/runs /cache/theano \
 && chown -R runner:runner /app/data /app/runs /cache \
 && /opt/venv/bin/python -m compileall -q /app

# THEANO_FLAGS sets only the cache location: compat.py adds floatX=float32 and
# blas.ldflags itself (as on a host). HOME and MPLCONFIGDIR point to /tmp so
# that any --user works without a home directory.
ENV PATH=/opt/venv/bin:$PATH \
    THEANO_FLAGS=base_compiledir=/cache/theano \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTEST_ADDOPTS="-p no:cacheprovider"
WORKDIR /app
VOLUME ["/app/data", "/app/runs", "/cache/theano"]
USER runner
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "train_nn.py", "--help"]



# ----------------------------------------------------------------------------
# gpu-current: Theano 1.0.5's GPU backend on today's GPUs (compute capability
# 5.0 to 9.0: A100, A10/A30/A40, RTX 30 and 40, L4/L40, H100/H200; also V100,
# T4, RTX 20 and P100; not Kepler, which drivers for CUDA 11.8 no longer
# support, nor Blackwell, which NVRTC 11.8 cannot compile for), from Debian 12
# and PyPI only, so that it builds here.
# - The cpu target's Python and requirements.txt, unchanged (numpy 1.23.5).
# - Debian's libgpuarray 0.7.6 and pygpu 0.7.6 (built for Debian's Python 3.11
#   and numpy 1.24.2). pygpu is linked into the venv, whose numpy is 1.23.5:
#   numpy 1.23 and 1.24 have the same C-API version (16) and ABI (0x01000009),
#   and their API headers differ only in messages and comments
#   (docker/check-gpu-current.sh imports pygpu under the venv's numpy).
# - CUDA 11.8's NVRTC and cuBLAS from NVIDIA's PyPI wheels
#   (docker/requirements-gpu-current.txt). libgpuarray dlopen()s the
#   unversioned libcuda.so, libnvrtc.so and libcublas.so; /opt/cuda/lib names
#   the last two, next to links to the files they load in turn from their own
#   folder (libcublasLt, libnvrtc-builtins). libcuda comes from the host's
#   driver at run time: the NVIDIA Container Toolkit mounts libcuda.so.1 into
#   /usr/lib/x86_64-linux-gnu, Apptainer's --nv into /.singularity.d/libs; a
#   libcuda.so link to each place (last on LD_LIBRARY_PATH; a dangling one is
#   passed over) covers hosts that mount only libcuda.so.1.
# - No cuDNN: Theano 1.0.5's cuDNN code calls functions cuDNN 8 removed, and
#   cuDNN 7 predates these GPUs. With dnn.enabled=False the convolutions are
#   Theano's GEMM-based GpuCorrMM (cuBLAS) and batch norm is GPU element-wise
#   ops and reductions.
FROM debian:bookworm-slim AS gpu-current

ARG GPUARRAY_DEB=0.7.6-13+b1

# The cpu target's packages, plus libgpuarray (its -dev package holds the
# headers Theano's GPU ops compile against) and pygpu, held at their version.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates g++ python3 python3-dev python3-venv tini \
        libgpuarray3=$GPUARRAY_DEB libgpuarray-dev=$GPUARRAY_DEB python3-pygpu=$GPUARRAY_DEB \
 && apt-mark hold libgpuarray3 libgpuarray-dev python3-pygpu \
 && rm -rf /var/lib/apt/lists/*

COPY requirements.txt docker/requirements-gpu-current.txt /tmp/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        -r /tmp/requirements.txt -r /tmp/requirements-gpu-current.txt \
 && rm /tmp/requirements.txt /tmp/requirements-gpu-current.txt \
 && site=/opt/venv/lib/python3.11/site-packages \
 && ln -s /usr/lib/python3/dist-packages/pygpu "$site/pygpu" \
 && ln -s /usr/lib/python3/dist-packages/pygpu-0.7.6.egg-info "$site/pygpu-0.7.6.egg-info" \
 && mkdir -p /opt/cuda/lib /opt/cuda/driver /opt/cuda/driver-apptainer \
 && ln -s "$site"/nvidia/cuda_nvrtc/lib/*.so.* "$site"/nvidia/cublas/lib/*.so.* /opt/cuda/lib/ \
 && ln -s libnvrtc.so.11.2 /opt/cuda/lib/libnvrtc.so \
 && ln -s libcublas.so.11 /opt/cuda/lib/libcublas.so \
 && ln -s /usr/lib/x86_64-linux-gnu/libcuda.so.1 /opt/cuda/driver/libcuda.so \
 && ln -s /.singularity.d/libs/libcuda.so.1 /opt/cuda/driver-apptainer/libcuda.so \
 && /opt/venv/bin/python -c "import pygpu, numpy; assert numpy.__version__ == '1.23.5'; print('pygpu', pygpu.__version__, 'numpy', numpy.__version__)"

COPY . /app
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp runner \
 && mkdir -p /app/data/weights /app/runs /cache/theano \
 && chown -R runner:runner /app/data /app/runs /cache \
 && /opt/venv/bin/python -m compileall -q /app

# Theano: the GPU, float32, no cuDNN, the cache volume. blas.ldflags is left
# to engine/compat.py, as on a host (scipy's OpenBLAS for the CPU parts);
# the project's CPU C ops stay off on a GPU device by themselves. No
# gpuarray.preallocate: memory is taken as needed and kept for reuse.
# Without a GPU, `import engine` ends the program with one line saying so;
# THEANO_FLAGS=device=cpu,base_compiledir=/cache/theano runs on the CPU.
# NVIDIA_REQUIRE_CUDA: the Container Toolkit refuses to start the container
# on a driver older than CUDA 11.8's (NVRTC 11.8's PTX needs it).
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/cuda/lib:/opt/cuda/driver:/opt/cuda/driver-apptainer \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=11.8" \
    THEANO_FLAGS="device=cuda,floatX=float32,dnn.enabled=False,base_compiledir=/cache/theano" \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTEST_ADDOPTS="-p no:cacheprovider"
WORKDIR /app
VOLUME ["/app/data", "/app/runs", "/cache/theano"]
USER runner
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "train_nn.py", "--help"]

# ----------------------------------------------------------------------------
# gpu: Theano 1.0.5's GPU backend (libgpuarray/pygpu 0.7.6) with CUDA 10.0 and
# cuDNN 7.6.5, for GPUs of compute capability 3.0 to 7.5 (Kepler to Turing).
#
# NVIDIA deleted the nvidia/cuda:10.0-cudnn7-* images in 2023, so this stage
# rebuilds what they held from parts that are still published:
# - Ubuntu 18.04, its final dated image (ubuntu:bionic-20230530, listed in
#   the docker-library "ubuntu" tags);
# - CUDA 10.0 and cuDNN 7.6.5 from NVIDIA's Ubuntu 18.04 apt repositories,
#   the packages and versions NVIDIA's own 10.0-cudnn7 Dockerfiles installed
#   (gitlab.com/nvidia/container-images/cuda); the repositories' signing keys
#   are checked against their published fingerprints (3bf863cc, the key since
#   April 2022, and 7fa2af80, the machine-learning repository's);
# - Miniconda 23.10.0-1 (installer sha256 as listed in the Miniconda
#   documentation's hash table) for a Python 3.8 environment from conda-forge:
#   pygpu/libgpuarray 0.7.6 are not on PyPI (conda-forge builds
#   pygpu-0.7.6-py38*_1003, Nov 2021), and numpy 1.23.5, the version the cpu
#   image uses, needs Python >= 3.8;
# - Theano 1.0.5 and Lasagne 0.1 from PyPI, as in requirements.txt (the
#   project's layers are its own, identical on Lasagne 0.1 and master), and
#   pytest 8.3.5 with its dependencies from PyPI, pinned for Python 3.8:
#   conda-forge's only pytest 8.3.5 build needs Python >= 3.9 (its feedstock's
#   python_min), PyPI's allows 3.8.
# - The CUDA run-time packages (cuda-cudart-10-0, cuda-nvrtc-10-0,
#   cuda-cublas-10-0) are named and pinned, not left to arrive as
#   dependencies, and every NVIDIA package is held.
FROM ubuntu:bionic-20230530 AS gpu

ARG CUDA_REPO=https://developer.download.nvidia.com/compute/cuda/repos/ubuntu1804/x86_64
ARG ML_REPO=https://developer.download.nvidia.com/compute/machine-learning/repos/ubuntu1804/x86_64
ARG CUDA_KEY_FPR=EB693B3035CD5710E231E123A4B469963BF863CC
ARG ML_KEY_FPR=AE09FE4BBD223A84B2CCFCE3F60F4B3D7FA2AF80
ARG CUDA_PKG=10.0.130-1
ARG CUDNN_PKG=7.6.5.32-1+cuda10.0

# g++ 7.5 compiles Theano's C and cuDNN ops against the CUDA 10.0 headers.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl gnupg g++ \
 && curl -fsSL "$CUDA_REPO/3bf863cc.pub" -o /tmp/cuda.pub \
 && curl -fsSL "$ML_REPO/7fa2af80.pub" -o /tmp/ml.pub \
 && gpg --dearmor < /tmp/cuda.pub > /etc/apt/trusted.gpg.d/nvidia-cuda.gpg \
 && gpg --dearmor < /tmp/ml.pub > /etc/apt/trusted.gpg.d/nvidia-ml.gpg \
 && for pair in "nvidia-cuda.gpg:$CUDA_KEY_FPR" "nvidia-ml.gpg:$ML_KEY_FPR"; do \
        found=$(gpg --batch --no-default-keyring --keyring "/etc/apt/trusted.gpg.d/${pair%%:*}" \
                    --with-colons --fingerprint | awk -F: '$1 == "fpr" {print $10; exit}'); \
        [ "$found" = "${pair#*:}" ] || { echo "NVIDIA key ${pair%%:*}: fingerprint $found, expected ${pair#*:}" >&2; exit 1; }; \
    done \
 && echo "deb $CUDA_REPO /" > /etc/apt/sources.list.d/cuda.list \
 && echo "deb $ML_REPO /" > /etc/apt/sources.list.d/nvidia-ml.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        cuda-minimal-build-10-0=$CUDA_PKG \
        cuda-cudart-10-0=$CUDA_PKG \
        cuda-cudart-dev-10-0=$CUDA_PKG \
        cuda-nvrtc-10-0=$CUDA_PKG \
        cuda-nvrtc-dev-10-0=$CUDA_PKG \
        cuda-cublas-10-0=$CUDA_PKG \
        cuda-cublas-dev-10-0=$CUDA_PKG \
        libcudnn7=$CUDNN_PKG \
        libcudnn7-dev=$CUDNN_PKG \
 && apt-mark hold cuda-minimal-build-10-0 cuda-cudart-10-0 cuda-cudart-dev-10-0 \
        cuda-nvrtc-10-0 cuda-nvrtc-dev-10-0 cuda-cublas-10-0 cuda-cublas-dev-10-0 \
        libcudnn7 libcudnn7-dev \
 && ln -sfn cuda-10.0 /usr/local/cuda \
 && echo /usr/local/cuda/lib64 > /etc/ld.so.conf.d/cuda-10-0.conf \
 && ldconfig \
 && rm -rf /var/lib/apt/lists/* /tmp/*.pub

# libgpuarray dlopen()s the unversioned libcuda.so, libnvrtc.so and
# libcublas.so. The -dev packages above provide the last two; libcuda comes
# from the host driver at run time (NVIDIA Container Toolkit, which mounts
# libcuda.so.1): this fallback link, last on the search path, covers hosts
# where only libcuda.so.1 is mounted.
RUN mkdir -p /usr/local/lib/cuda-driver \
 && ln -s /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/local/lib/cuda-driver/libcuda.so

ARG MINICONDA=Miniconda3-py311_23.10.0-1-Linux-x86_64.sh
ARG MINICONDA_SHA256=d0643508fa49105552c94a523529f4474f91730d3e0d1f168f1700c43ae67595
RUN curl -fsSL "https://repo.anaconda.com/miniconda/$MINICONDA" -o /tmp/miniconda.sh \
 && echo "$MINICONDA_SHA256  /tmp/miniconda.sh" | sha256sum -c - \
 && bash /tmp/miniconda.sh -b -p /opt/conda \
 && rm /tmp/miniconda.sh \
 && /opt/conda/bin/conda create -y -p /opt/env --override-channels -c conda-forge \
        python=3.8.18 \
        numpy=1.23.5 \
        scipy=1.10.1 \
        matplotlib-base=3.7.3 \
        libblas=3.9.0=*_openblas \
        libopenblas=0.3.21 \
        libgpuarray=0.7.6 \
        pygpu=0.7.6 \
        six=1.16.0 \
        tini=0.19.0 \
 && /opt/env/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-deps \
        Theano==1.0.5 \
        Lasagne==0.1 \
        pytest==8.3.5 \
        iniconfig==2.0.0 \
        packaging==24.2 \
        pluggy==1.5.0 \
        exceptiongroup==1.2.2 \
        tomli==2.2.1 \
 && /opt/conda/bin/conda list -p /opt/env --explicit > /opt/env/conda-explicit.txt \
 && /opt/conda/bin/conda clean -afy

COPY . /app
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp runner \
 && mkdir -p /app/data/weights /app/runs /cache/theano \
 && chown -R runner:runner /app/data /app/runs /cache \
 && /opt/env/bin/python -m compileall -q /app

# Theano: the GPU, float32, cuDNN required (dnn.enabled=True fails loudly
# instead of silently falling back to slow convolutions), the CUDA headers
# cudnn.h includes (cuda.root), cuDNN where libcudnn7-dev puts it, and conda's BLAS (OpenBLAS behind the
# standard libblas name) for the CPU parts. blas.ldflags names -lblas, not
# -lopenblas, on purpose: the project's CPU-only C ops (ops.py, on main since
# this image was written) switch themselves on when "openblas" appears there,
# and on the GPU the convolutions must stay Theano's, which become cuDNN ones.
# No gpuarray.preallocate: a fraction there makes `import theano` fail on a
# card with less free memory than that ("Trying to preallocate N MB of GPU
# memory while only M MB are available"; a card that also drives a desktop),
# so memory is taken as needed and kept for reuse (Theano's default).
# theano/configdefaults.py (1.0.5) documents each flag. A later THEANO_FLAGS
# entry overrides an earlier one: append yours to this value.
ENV PATH=/opt/env/bin:/usr/local/cuda/bin:$PATH \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64:/usr/local/lib/cuda-driver \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=10.0" \
    THEANO_FLAGS="device=cuda,floatX=float32,dnn.enabled=True,cuda.root=/usr/local/cuda,dnn.include_path=/usr/include,dnn.library_path=/usr/lib/x86_64-linux-gnu,base_compiledir=/cache/theano,blas.ldflags=-L/opt/env/lib -lblas" \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTEST_ADDOPTS="-p no:cacheprovider"
WORKDIR /app
VOLUME ["/app/data", "/app/runs", "/cache/theano"]
USER runner
ENTRYPOINT ["/opt/env/bin/tini", "--"]
CMD ["python", "train_nn.py", "--help"]
