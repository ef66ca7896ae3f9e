"""The Dockerfile, read as text: the three targets exist and pin (and hold)
what they install, the containers run as a user with volumes for data, runs
and Theano's cache, the project code parses on the gpu image's older Python,
whose pinned packages all support that Python (as their registries record
it), and the README's Docker commands are the ones docker/check.sh and
docker/check-gpu-current.sh run.

No container engine is needed: CI builds no image, and the legacy `gpu`
target cannot be built on the development machine (no GPU, no registry), so
these checks are all it gets there. Each rule is also tried on a broken
Dockerfile, so a rule that stopped finding anything would fail here too.
"""
import ast
import os
import re
import shlex

import pytest

from conftest import PROJECT_DIR

DOCKERFILE = os.path.join(PROJECT_DIR, "Dockerfile")
README = os.path.join(PROJECT_DIR, "README.md")
DOCKER_DOC = os.path.join(PROJECT_DIR, "docs", "docker.md")
CHECK_SCRIPT = os.path.join(PROJECT_DIR, "docker", "check.sh")
GPU_CHECK_SCRIPT = os.path.join(PROJECT_DIR, "docker", "check-gpu-current.sh")
GPU_REQUIREMENTS = os.path.join(PROJECT_DIR, "docker", "requirements-gpu-current.txt")
DOCKERIGNORE = os.path.join(PROJECT_DIR, ".dockerignore")
REQUIREMENTS = os.path.join(PROJECT_DIR, "requirements.txt")

# Installed from NVIDIA's repositories: the CUDA/cuDNN stack, pinned exactly.
NVIDIA_PACKAGE = re.compile(r"^(cuda-|libcudnn|libnccl|libcublas|libnvinfer)")
# Debian's GPU backend for Theano, pinned exactly too.
DEBIAN_GPU_PACKAGE = re.compile(r"^(libgpuarray|python3-pygpu)")


def read(path):
    with open(path) as f:
        return f.read()


# =============================================================================
# A small Dockerfile reader


def instructions(text):
    """[(line number, INSTRUCTION, arguments)] with continuations joined and
    comments dropped."""
    result, pending, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, args = pending.partition(" ")
        result.append((start, keyword.upper(), args.strip()))
        pending = ""
    return result


def stages(text):
    """{stage name: {"from": image, "lines": [(number, INSTRUCTION, args)], "args": {}}}.
    ARG defaults are substituted into FROM, ENV and RUN, as a build would."""
    found, current, global_args = {}, None, {}
    for number, keyword, args in instructions(text):
        if keyword == "FROM":
            words = args.split()
            image = _substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else "#%d" % len(found)
            current = found[name] = {"from": image, "from_line": number, "lines": [], "args": {}}
            continue
        if keyword == "ARG":
            key, _, value = args.partition("=")
            (current["args"] if current else global_args)[key.strip()] = value.strip().strip('"')
            continue
        if current is None:
            continue
        current["lines"].append((number, keyword, _substitute(args, current["args"])))
    return found


def _substitute(text, values):
    def value(match):
        return values.get(match.group(1) or match.group(2), match.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def commands(run_args):
    """Split a RUN's shell text into simple commands (lists of words)."""
    try:
        words = shlex.split(run_args, posix=True)
    except ValueError:
        words = run_args.split()
    command, result = [], []
    for word in words:
        if word in ("&&", "||", ";", "|", "then", "do", "done", "fi", "else") or word.endswith(";"):
            if word.endswith(";") and word not in (";",):
                command.append(word[:-1])
            if command:
                result.append(command)
            command = []
        else:
            command.append(word)
    if command:
        result.append(command)
    return result


# =============================================================================
# The rules; each returns a list of problems (strings)


def image_problems(image):
    """A FROM image must name a tag or a digest, never `latest`."""
    if "@sha256:" in image:
        return []
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return ["FROM %s: no tag or digest (that is `latest`)" % image]
    if tag == "latest":
        return ["FROM %s: the floating `latest` tag" % image]
    return []


def pip_problems(words, project_files):
    """Every pip install names exact versions (==), a pinned requirements file
    or a URL fixed by a commit hash."""
    problems = []
    i = words.index("install") + 1 if "install" in words else len(words)
    while i < len(words):
        word = words[i]
        if word in ("-r", "--requirement"):
            problems += requirements_problems(words[i + 1], project_files)
            i += 2
            continue
        if word.startswith("-"):
            i += 1
            continue
        if "://" in word:
            if not re.search(r"[0-9a-f]{40}", word):
                problems.append("pip install %s: a URL not fixed by a commit hash" % word)
        elif not re.match(r"^[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*$", word):
            problems.append("pip install %s: no exact version (name==version)" % word)
        i += 1
    return problems


def requirements_problems(path, project_files):
    """A requirements file given to pip must pin every line with ==."""
    local = project_files.get(os.path.basename(path))
    if local is None:
        return ["pip install -r %s: not a file of this project" % path]
    problems = []
    for line in local.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not re.match(r"^[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*$", line):
            problems.append("%s: %r is not pinned with ==" % (path, line))
    return problems


def conda_problems(words):
    """conda/mamba create|install: every package spec is name=version, and the
    channels are given explicitly (no defaults that change with the installer)."""
    problems = []
    verb = next((w for w in words if w in ("install", "create")), None)
    if verb is None:
        return []
    if "--override-channels" not in words:
        problems.append("conda %s without --override-channels" % verb)
    i = words.index(verb) + 1
    while i < len(words):
        word = words[i]
        if word in ("-c", "--channel", "-p", "--prefix", "-n", "--name", "--file"):
            i += 2
            continue
        if word.startswith("-"):
            i += 1
            continue
        if not re.match(r"^[A-Za-z0-9_.\-]+=[0-9][\w.]*(=[\w.*]+)?$", word):
            problems.append("conda %s %s: no exact version (name=version)" % (verb, word))
        i += 1
    return problems


def gpu_stack_package(name):
    return bool(NVIDIA_PACKAGE.match(name) or DEBIAN_GPU_PACKAGE.match(name))


def apt_problems(words):
    """apt-get install of the GPU stack's packages (NVIDIA's CUDA/cuDNN,
    Debian's libgpuarray/pygpu): name=version."""
    problems = []
    for word in words[words.index("install") + 1:]:
        if word.startswith("-"):
            continue
        name = word.split("=", 1)[0]
        if NVIDIA_PACKAGE.match(name) and "=" not in word:
            problems.append("apt-get install %s: NVIDIA's packages need =version" % word)
        elif DEBIAN_GPU_PACKAGE.match(name) and "=" not in word:
            problems.append("apt-get install %s: the GPU stack's packages need =version" % word)
    return problems


def apt_packages(words):
    return [w.split("=", 1)[0] for w in words[words.index("install") + 1:]
            if not w.startswith("-")]


def download_problems(run_args):
    """A RUN that downloads an installer checks its sha256; one that fetches a
    signing key checks the key's fingerprint."""
    problems = []
    for url in re.findall(r"https?://\S+", run_args):
        url = url.strip("\"'")
        if url.endswith((".sh", ".tar.gz", ".tgz", ".deb", ".whl", ".run")) \
                and "sha256sum" not in run_args:
            problems.append("downloads %s without a sha256 check" % url)
        if url.endswith((".pub", ".asc", ".gpg")) and "fingerprint" not in run_args:
            problems.append("fetches the key %s without checking its fingerprint" % url)
    return problems


def stage_problems(name, stage, project_files):
    problems = ["%s: %s" % (name, p) for p in image_problems(stage["from"])]
    user = None
    env = {}
    gpu_packages, held = [], set()
    for number, keyword, args in stage["lines"]:
        where = "%s, line %d" % (name, number)
        if keyword == "RUN":
            problems += ["%s: %s" % (where, p) for p in download_problems(args)]
            for words in commands(args):
                while words and re.match(r"^\w+=", words[0]):
                    words = words[1:]  # VAR=value before the command
                tool = os.path.basename(words[0]) if words else ""
                if tool in ("pip", "pip3") or (len(words) > 2 and words[1:3] == ["-m", "pip"]):
                    if "install" in words:
                        problems += ["%s: %s" % (where, p)
                                     for p in pip_problems(words, project_files)]
                elif tool in ("conda", "mamba", "micromamba"):
                    problems += ["%s: %s" % (where, p) for p in conda_problems(words)]
                elif tool in ("apt-get", "apt") and "install" in words:
                    problems += ["%s: %s" % (where, p) for p in apt_problems(words)]
                    gpu_packages += [(where, n) for n in apt_packages(words)
                                     if gpu_stack_package(n)]
                elif tool == "apt-mark" and "hold" in words:
                    held.update(words[words.index("hold") + 1:])
        elif keyword == "USER":
            user = args.split(":")[0]
        elif keyword == "ENV":
            for match in re.finditer(r'(\w+)=("[^"]*"|\S+)', args):
                env[match.group(1)] = match.group(2).strip('"')
    if user is None or user in ("root", "0"):
        problems.append("%s: the container would run as root (no USER, or USER %s)"
                        % (name, user))
    # A pinned GPU package is also held, so that no later `apt-get upgrade`
    # in a derived image moves it (NVIDIA's own CUDA images held theirs).
    problems += ["%s: apt-get install %s: not held (apt-mark hold)" % (where, package)
                 for where, package in gpu_packages if package not in held]
    stage["env"] = env
    return problems


def dockerfile_problems(text, project_files):
    found = stages(text)
    problems = []
    for target in ("cpu", "gpu-current", "gpu"):
        if target not in found:
            problems.append("no `%s` target (FROM ... AS %s)" % (target, target))
    for name, stage in found.items():
        problems += stage_problems(name, stage, project_files)
    return problems


def project_files():
    return {os.path.basename(path): read(path) for path in (REQUIREMENTS, GPU_REQUIREMENTS)}


# =============================================================================
# The real Dockerfile


def test_the_dockerfile_pins_everything_and_runs_as_a_user():
    assert dockerfile_problems(read(DOCKERFILE), project_files()) == []


def test_cpu_target_is_debian_bookworm_with_the_projects_requirements():
    cpu = stages(read(DOCKERFILE))["cpu"]
    assert cpu["from"] == "debian:bookworm-slim"  # the only base image the dev machine has
    runs = " ".join(args for _, keyword, args in cpu["lines"] if keyword == "RUN")
    assert re.search(r"pip install .*-r /tmp/requirements\.txt", runs)
    copies = [args for _, keyword, args in cpu["lines"] if keyword == "COPY"]
    assert "requirements.txt /tmp/requirements.txt" in copies
    # The BLAS set-up of a host install: no system OpenBLAS, so compat.py
    # links scipy's bundled copy, and THEANO_FLAGS does not override it.
    assert "libopenblas" not in runs
    assert stage_problems("cpu", cpu, project_files()) == []
    assert "blas.ldflags" not in cpu["env"]["THEANO_FLAGS"]


def test_gpu_target_pins_the_legacy_stack():
    gpu = stages(read(DOCKERFILE))["gpu"]
    image = gpu["from"]
    # a dated tag (ubuntu:bionic-YYYYMMDD) or a digest, not just `ubuntu:18.04`
    assert "@sha256:" in image or re.search(r":[a-z]+-\d{8}$", image), image
    runs = " ".join(args for _, keyword, args in gpu["lines"] if keyword == "RUN")
    # The run-time packages too, not only the -dev ones that depend on them.
    for package in ("cuda-cudart-10-0=10.0.130-1", "cuda-nvrtc-10-0=10.0.130-1",
                    "cuda-cublas-10-0=10.0.130-1",
                    "cuda-cudart-dev-10-0=10.0.130-1", "cuda-nvrtc-dev-10-0=10.0.130-1",
                    "cuda-cublas-dev-10-0=10.0.130-1", "libcudnn7=7.6.5.32-1+cuda10.0",
                    "libcudnn7-dev=7.6.5.32-1+cuda10.0"):
        assert package in runs
    for spec in ("pygpu=0.7.6", "libgpuarray=0.7.6"):
        assert spec in runs
    assert re.search(r"sha256sum -c", runs)


def pinned(text, name):
    match = re.search(r"^%s==(\S+)" % re.escape(name), text, re.M | re.I)
    return match.group(1) if match else None


def test_gpu_target_has_the_same_theano_lasagne_and_numpy_as_requirements():
    requirements = read(REQUIREMENTS)
    runs = " ".join(args for _, keyword, args in stages(read(DOCKERFILE))["gpu"]["lines"]
                    if keyword == "RUN")
    assert "Theano==%s" % pinned(requirements, "Theano") in runs
    assert "Lasagne==%s" % pinned(requirements, "Lasagne") in runs
    assert "numpy=%s" % pinned(requirements, "numpy") in runs


def test_gpu_theano_flags_select_the_gpu_and_cudnn():
    gpu = stages(read(DOCKERFILE))["gpu"]
    assert stage_problems("gpu", gpu, project_files()) == []
    flags = dict(item.split("=", 1) for item in gpu["env"]["THEANO_FLAGS"].split(","))
    assert flags["device"] == "cuda"
    assert flags["floatX"] == "float32"
    assert flags["base_compiledir"] == "/cache/theano"
    for key in ("dnn.include_path", "dnn.library_path", "cuda.root", "blas.ldflags"):
        assert flags.get(key), key
    assert flags["dnn.enabled"] == "True"  # no silent fallback to slow convolutions
    # layers.py's CPU C ops (ops.py) turn on when "openblas" is in blas.ldflags;
    # on the GPU the convolutions must stay Theano's, which become cuDNN's.
    assert "openblas" not in flags["blas.ldflags"]
    # A fraction preallocated makes `import theano` fail on a card with less
    # free memory than that (one that also drives a desktop).
    assert "gpuarray.preallocate" not in flags


# =============================================================================
# The gpu-current target


def gpu_current():
    stage = stages(read(DOCKERFILE))["gpu-current"]
    assert stage_problems("gpu-current", stage, project_files()) == []
    runs = " ".join(args for _, keyword, args in stage["lines"] if keyword == "RUN")
    return stage, runs


def test_gpu_current_is_the_cpu_image_plus_debians_gpu_backend():
    stage, runs = gpu_current()
    assert stage["from"] == "debian:bookworm-slim"  # buildable on the dev machine
    # the cpu image's Python packages, exactly, plus the CUDA wheels
    assert re.search(r"pip install .*-r /tmp/requirements\.txt", runs)
    assert "-r /tmp/requirements-gpu-current.txt" in runs
    for package in ("libgpuarray3=0.7.6-13+b1", "libgpuarray-dev=0.7.6-13+b1",
                    "python3-pygpu=0.7.6-13+b1"):
        assert package in runs
    # Only pygpu is taken from Debian's Python packages (not its numpy 1.24).
    assert "--system-site-packages" not in runs
    assert "ln -s /usr/lib/python3/dist-packages/pygpu " in runs
    assert "assert numpy.__version__ == '%s'" % pinned(read(REQUIREMENTS), "numpy") in runs


def test_gpu_current_gives_libgpuarray_the_library_names_it_loads():
    stage, runs = gpu_current()
    # libgpuarray dlopen()s these unversioned names (read from its binary by
    # docker/gpu_current_libs.py, which the check script runs in the image).
    for link in ("ln -s libnvrtc.so.11.2 /opt/cuda/lib/libnvrtc.so",
                 "ln -s libcublas.so.11 /opt/cuda/lib/libcublas.so",
                 "/usr/lib/x86_64-linux-gnu/libcuda.so.1 /opt/cuda/driver/libcuda.so",
                 "/.singularity.d/libs/libcuda.so.1 /opt/cuda/driver-apptainer/libcuda.so"):
        assert link in runs, link
    # The libraries cuBLAS and NVRTC load from their own folder lie beside the links.
    assert re.search(r"ln -s \S*/nvidia/cuda_nvrtc/lib/\*\.so\.\* \S*/nvidia/cublas/lib/\*\.so\.\* "
                     r"/opt/cuda/lib/", runs)
    path = stage["env"]["LD_LIBRARY_PATH"].split(":")
    assert path[0] == "/opt/cuda/lib"
    # the host driver's own libcuda.so, where mounted, before the fallbacks
    assert path[-2:] == ["/opt/cuda/driver", "/opt/cuda/driver-apptainer"]


def test_gpu_current_theano_flags_select_the_gpu_without_cudnn():
    stage, _ = gpu_current()
    flags = dict(item.split("=", 1) for item in stage["env"]["THEANO_FLAGS"].split(","))
    assert flags == {"device": "cuda", "floatX": "float32", "dnn.enabled": "False",
                     "base_compiledir": "/cache/theano"}
    # blas.ldflags is compat.py's choice, as on a host; its CPU C ops turn
    # themselves off on a GPU device (engine/layers.py, c_ops_apply).


def cuda_version(wheel_version):
    return ".".join(wheel_version.split(".")[:2])


def test_gpu_current_cuda_wheels_driver_requirement_and_readme_agree():
    stage, runs = gpu_current()
    requirements = read(GPU_REQUIREMENTS)
    nvrtc = pinned(requirements, "nvidia-cuda-nvrtc-cu11")
    assert nvrtc and pinned(requirements, "nvidia-cublas-cu11")
    # NVRTC's PTX needs a driver of its own CUDA version or later: the
    # Container Toolkit enforces it, and the README says which driver that is.
    assert stage["env"]["NVIDIA_REQUIRE_CUDA"] == "cuda>=%s" % cuda_version(nvrtc)
    assert cuda_version(nvrtc) == "11.8"  # if it changes, so must the numbers below
    for path in (README, DOCKER_DOC):
        text = " ".join(read(path).split())
        assert "520.61.05" in text, path       # CUDA 11.8's minimum Linux driver
        assert "418.81.07" in text, path       # the legacy image's (the Container Toolkit's)
        assert "410.48 or newer" not in text, path  # CUDA 10.0's own, not the toolkit's
        assert "gpuarray.preallocate=0.9` takes" not in text, path
        for name in ("A100", "H100", "H200", "RTX 30", "RTX 40"):
            assert name in text, (path, name)
    # the wheels' sonames, as linked in the Dockerfile
    assert "libnvrtc.so.11.2" in runs and "libcublas.so.11" in runs


# =============================================================================
# The legacy gpu target's pins against the Python it installs them into

# Which Pythons each pinned Python package of the `gpu` target supports, as its
# registry records it (checked 2026-11-29). pip: the Requires-Python of the
# PyPI files (read from the wheels' and sdists' metadata; "" = none given).
# conda: conda-forge's builds: per-Python builds (py38 and later) for numpy,
# scipy and matplotlib-base, whose bounds are upstream's Requires-Python (as
# PyPI records it); pygpu's build named in the Dockerfile (py38); noarch
# pytest 8.3.5 needs Python >= 3.9 (the feedstock's python_min, as issue 18
# recorded it; conda-forge cannot be reached from the development machine).
# So this test cannot tell that a conda solve will succeed, only that no pin
# is known to exclude the stage's Python. A new pin must be added here with
# its bounds.
PYTHON_BOUNDS = {
    ("pip", "Theano", "1.0.5"): "",
    ("pip", "Lasagne", "0.1"): "",
    ("pip", "pytest", "8.3.5"): ">=3.8",
    ("pip", "iniconfig", "2.0.0"): ">=3.7",
    ("pip", "packaging", "24.2"): ">=3.8",
    ("pip", "pluggy", "1.5.0"): ">=3.8",
    ("pip", "exceptiongroup", "1.2.2"): ">=3.7",
    ("pip", "tomli", "2.2.1"): ">=3.8",
    ("conda", "numpy", "1.23.5"): ">=3.8",
    ("conda", "scipy", "1.10.1"): ">=3.8,<3.12",
    ("conda", "matplotlib-base", "3.7.3"): ">=3.8",
    ("conda", "six", "1.16.0"): ">=2.7,!=3.0.*,!=3.1.*,!=3.2.*",
    ("conda", "pygpu", "0.7.6"): "==3.8.*",
    ("conda", "pytest", "8.3.5"): ">=3.9",
}
# conda packages that are not Python packages
NOT_PYTHON = {"python", "libblas", "libopenblas", "libgpuarray", "tini"}


def pinned_python_packages(stage):
    """[(installer, name, version)] of a stage's conda create/install and pip
    install lines (name=version, name==version)."""
    found = []
    for _, keyword, args in stage["lines"]:
        if keyword != "RUN":
            continue
        for words in commands(args):
            tool = os.path.basename(words[0]) if words else ""
            if tool in ("conda", "mamba") and ("create" in words or "install" in words):
                for word in words:
                    match = re.match(r"^([A-Za-z0-9_.\-]+)=([0-9][\w.]*)(=[\w.*]+)?$", word)
                    if match and match.group(1) not in NOT_PYTHON:
                        found.append(("conda", match.group(1), match.group(2)))
            elif "pip" in words and "install" in words:
                for word in words:
                    match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([0-9][\w.]*)$", word)
                    if match:
                        found.append(("pip", match.group(1), match.group(2)))
    return found


def python_bound_problems(text):
    from packaging.specifiers import SpecifierSet
    stage = stages(text)["gpu"]
    runs = " ".join(args for _, keyword, args in stage["lines"] if keyword == "RUN")
    python = re.search(r"\bpython=(\d+\.\d+\.\d+)", runs).group(1)
    problems = []
    for key in pinned_python_packages(stage):
        if key not in PYTHON_BOUNDS:
            problems.append("%s %s=%s: its Python bounds are not recorded in PYTHON_BOUNDS" % key)
        elif python not in SpecifierSet(PYTHON_BOUNDS[key]):
            problems.append("%s %s=%s needs Python %s, the stage installs %s"
                            % (key + (PYTHON_BOUNDS[key], python)))
    return problems


def test_gpu_target_pins_support_its_python():
    assert python_bound_problems(read(DOCKERFILE)) == []
    assert len(pinned_python_packages(stages(read(DOCKERFILE))["gpu"])) >= 12


def test_python_bound_rule_catches_conda_forges_pytest_835_on_python_38():
    text = read(DOCKERFILE).replace("six=1.16.0 \\", "six=1.16.0 pytest=8.3.5 \\", 1)
    assert "pytest=8.3.5" in text
    problems = python_bound_problems(text)
    assert any("conda pytest=8.3.5 needs Python >=3.9" in p for p in problems), problems
    problems = python_bound_problems(read(DOCKERFILE).replace("tomli==2.2.1", "tomli==2.3.0"))
    assert any("not recorded" in p for p in problems), problems


def test_both_targets_share_the_volume_layout_and_signal_handling():
    for name, stage in stages(read(DOCKERFILE)).items():
        lines = stage["lines"]
        volumes = [args for _, keyword, args in lines if keyword == "VOLUME"]
        assert volumes == ['["/app/data", "/app/runs", "/cache/theano"]'], name
        assert ("WORKDIR", "/app") in [(k, a) for _, k, a in lines], name
        assert stage_problems(name, stage, project_files()) == [], name
        assert "base_compiledir=/cache/theano" in stage["env"]["THEANO_FLAGS"], name
        entrypoint = [args for _, keyword, args in lines if keyword == "ENTRYPOINT"]
        assert entrypoint and "tini" in entrypoint[-1], name  # forwards docker stop's SIGTERM


def gpu_python_version():
    runs = " ".join(args for _, keyword, args in stages(read(DOCKERFILE))["gpu"]["lines"]
                    if keyword == "RUN")
    major, minor = re.search(r"\bpython=(\d+)\.(\d+)", runs).groups()
    return int(major), int(minor)


def project_python_files():
    """Every Python file the image copies: the project's folders at any depth,
    without virtual environments, caches and data."""
    skip = {".git", ".venv", "venv", "runs", "data", "__pycache__", ".pytest_cache"}
    found = []
    for folder, subfolders, names in os.walk(PROJECT_DIR):
        subfolders[:] = [d for d in subfolders if d not in skip and not d.startswith(".")]
        found += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    return found


def test_project_code_parses_on_the_gpu_images_python():
    version = gpu_python_version()
    assert version >= (3, 7)
    files = project_python_files()
    assert os.path.join(PROJECT_DIR, "engine", "ops.py") in files
    assert os.path.join(PROJECT_DIR, "train_nn.py") in files
    for path in files:
        ast.parse(read(path), path, feature_version=version)


def test_dockerignore_keeps_data_runs_and_git_out():
    ignored = [line.strip() for line in read(DOCKERIGNORE).splitlines()
               if line.strip() and not line.startswith("#")]
    for entry in (".git", "runs", "data/cifar-10-batches-py", "data/cifar-100-python",
                  "data/*.tar.gz", "data/weights"):
        assert entry in ignored, entry


# =============================================================================
# The README's commands are the check script's


def joined_lines(text):
    """Lines with backslash continuations joined and spaces collapsed."""
    return [" ".join(line.split()) for line in re.sub(r"\\\n\s*", " ", text).splitlines()]


def docker_commands(text):
    """Every `docker ...` command of a text, from the word `docker` to the end
    of its (joined) line; in a script it may follow `if`, `(`, `&&` and so on."""
    found = []
    for line in joined_lines(text):
        for match in re.finditer(r"(?:^|(?<=[\s(;&|!]))docker (?=[a-z])", line):
            found.append(line[match.start():])
    return found


def readme_checked_commands():
    """The commands in the code blocks of the README's "### The CPU image"."""
    readme = read(README)
    section = readme.split("\n### The CPU image", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"\n((?:    .*\n|\n)+)", section)
    return [line for line in joined_lines("".join(blocks)) if line.startswith("docker ")]


def runs_in(command, script_commands):
    """The script runs `command` as it is, at most followed by a redirection
    or a shell operator."""
    for candidate in script_commands:
        if candidate == command:
            return True
        rest = candidate[len(command):] if candidate.startswith(command + " ") else None
        if rest is not None and re.match(r"^ (>|2>|&>|&&|\|\||\||;|\))", rest):
            return True
    return False


def test_readme_docker_commands_are_the_ones_check_sh_runs():
    readme_commands = readme_checked_commands()
    assert any("docker build --target cpu" in c for c in readme_commands)
    assert any("python -m pytest -q tests" in c for c in readme_commands)
    assert any("docker stop" in c for c in readme_commands)
    assert any("--resume" in c for c in readme_commands)
    script = docker_commands(read(CHECK_SCRIPT))
    missing = [c for c in readme_commands if not runs_in(c, script)]
    assert missing == []


def gpu_readme_checked_commands():
    """The commands in the code blocks of docs/docker.md's "### The
    gpu-current image, checked" (the README points there)."""
    section = read(DOCKER_DOC).split("\n### The gpu-current image, checked", 1)[1]
    section = section.split("\n### ", 1)[0]
    blocks = re.findall(r"\n((?:    .*\n|\n)+)", section)
    return [line for line in joined_lines("".join(blocks)) if line.startswith("docker ")]


def test_gpu_readme_commands_are_the_ones_check_gpu_current_runs():
    readme_commands = gpu_readme_checked_commands()
    assert any("docker build --target gpu-current" in c for c in readme_commands)
    assert any("gpu_current_libs.py" in c for c in readme_commands)
    assert any("device=cpu" in c and "pytest" in c for c in readme_commands)
    assert any("--gpus all" in c and "-m gpu" in c for c in readme_commands)
    script = docker_commands(read(GPU_CHECK_SCRIPT))
    missing = [c for c in readme_commands if not runs_in(c, script)]
    assert missing == []


# =============================================================================
# Each rule catches what it is there for


def broken(old, new):
    text = read(DOCKERFILE)
    assert old in text, old
    return dockerfile_problems(text.replace(old, new, 1), project_files())


@pytest.mark.parametrize("old, new, expected", [
    ("FROM ubuntu:bionic-20230530 AS gpu", "FROM ubuntu:latest AS gpu", "latest"),
    ("FROM ubuntu:bionic-20230530 AS gpu", "FROM ubuntu AS gpu", "no tag"),
    ("FROM debian:bookworm-slim AS cpu", "FROM debian AS cpu", "no tag"),
    ("FROM debian:bookworm-slim AS cpu", "FROM debian:bookworm-slim AS cpux", "no `cpu` target"),
    ("Lasagne==0.1", "Lasagne", "no exact version"),
    ("Theano==1.0.5", "Theano>=1.0", "no exact version"),
    ("-r /tmp/requirements.txt", "-r /tmp/requirements.txt foo", "pip install foo"),
    ("pygpu=0.7.6", "pygpu", "conda create pygpu"),
    ("pygpu=0.7.6", "theano", "conda create theano"),
    ("--override-channels -c conda-forge", "-c conda-forge", "override-channels"),
    ("libcudnn7=$CUDNN_PKG", "libcudnn7", "libcudnn7: NVIDIA"),
    ('| sha256sum -c -', '| cat', "without a sha256 check"),
    ("USER runner\nENTRYPOINT [\"/opt", "USER root\nENTRYPOINT [\"/opt", "run as root"),
])
def test_rules_catch_a_broken_dockerfile(old, new, expected):
    problems = broken(old, new)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("old, new, expected", [
    ("FROM debian:bookworm-slim AS gpu-current", "FROM debian:bookworm-slim AS gpu-new",
     "no `gpu-current` target"),
    ("python3-pygpu=$GPUARRAY_DEB", "python3-pygpu", "the GPU stack's packages need =version"),
    ("apt-mark hold libgpuarray3 libgpuarray-dev python3-pygpu",
     "apt-mark hold libgpuarray3 libgpuarray-dev", "python3-pygpu: not held"),
    ("cuda-nvrtc-dev-10-0 cuda-cublas-10-0 cuda-cublas-dev-10-0",
     "cuda-nvrtc-dev-10-0 cuda-cublas-dev-10-0", "cuda-cublas-10-0: not held"),
])
def test_rules_catch_an_unpinned_or_unheld_gpu_package(old, new, expected):
    problems = broken(old, new)
    assert any(expected in p for p in problems), problems


def test_rules_catch_conda_install_without_version():
    text = read(DOCKERFILE) + "\nRUN conda install -y --override-channels -c conda-forge theano\n"
    problems = dockerfile_problems(text, project_files())
    assert any("conda install theano" in p for p in problems), problems


def test_rules_catch_pip_install_of_an_unpinned_requirements_file():
    files = {"requirements.txt": "Theano==1.0.5\nnumpy>=1.20\n"}
    problems = dockerfile_problems(read(DOCKERFILE), files)
    assert any("'numpy>=1.20' is not pinned" in p for p in problems), problems


def test_rules_catch_a_key_without_fingerprint_check():
    problems = download_problems("curl -fsSL https://example.org/repo/key.pub | apt-key add -")
    assert problems and "fingerprint" in problems[0]


def test_rules_catch_a_readme_command_that_the_script_does_not_run():
    script = docker_commands(read(CHECK_SCRIPT))
    assert runs_in("docker stop -t 60 preresnet-train", script)
    assert not runs_in("docker run --rm preresnet:cpu python train_nn.py normal 18", script)
    assert not runs_in("docker stop -t 6 preresnet-train", script)
    assert not runs_in("docker build --target cpu -t preresnet:cpu", script)
