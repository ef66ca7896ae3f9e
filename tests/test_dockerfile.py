"""The Dockerfile, read as text: both targets exist and pin what they install,
the containers run as a user with volumes for data, runs and Theano's cache,
the project code parses on the gpu image's older Python, and the README's
Docker commands are the ones docker/check.sh runs.

No container engine is needed: the `gpu` target cannot be built on the
development machine (no GPU, no registry), so these checks are all it gets
there. Each rule is also tried on a broken Dockerfile, so a rule that stopped
finding anything would fail here too.
"""
import ast
import os
import re
import shlex

import pytest

from conftest import PROJECT_DIR

DOCKERFILE = os.path.join(PROJECT_DIR, "Dockerfile")
README = os.path.join(PROJECT_DIR, "README.md")
CHECK_SCRIPT = os.path.join(PROJECT_DIR, "docker", "check.sh")
DOCKERIGNORE = os.path.join(PROJECT_DIR, ".dockerignore")
REQUIREMENTS = os.path.join(PROJECT_DIR, "requirements.txt")

# Installed from NVIDIA's repositories: the CUDA/cuDNN stack, pinned exactly.
NVIDIA_PACKAGE = re.compile(r"^(cuda-|libcudnn|libnccl|libcublas|libnvinfer)")


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


def apt_problems(words):
    """apt-get install of NVIDIA's CUDA/cuDNN packages: name=version."""
    problems = []
    for word in words[words.index("install") + 1:]:
        if word.startswith("-"):
            continue
        name = word.split("=", 1)[0]
        if NVIDIA_PACKAGE.match(name) and "=" not in word:
            problems.append("apt-get install %s: NVIDIA's packages need =version" % word)
    return problems


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
        elif keyword == "USER":
            user = args.split(":")[0]
        elif keyword == "ENV":
            for match in re.finditer(r'(\w+)=("[^"]*"|\S+)', args):
                env[match.group(1)] = match.group(2).strip('"')
    if user is None or user in ("root", "0"):
        problems.append("%s: the container would run as root (no USER, or USER %s)"
                        % (name, user))
    stage["env"] = env
    return problems


def dockerfile_problems(text, project_files):
    found = stages(text)
    problems = []
    for target in ("cpu", "gpu"):
        if target not in found:
            problems.append("no `%s` target (FROM ... AS %s)" % (target, target))
    for name, stage in found.items():
        problems += stage_problems(name, stage, project_files)
    return problems


def project_files():
    return {os.path.basename(REQUIREMENTS): read(REQUIREMENTS)}


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
    for package in ("cuda-cudart-dev-10-0=10.0.130-1", "cuda-nvrtc-dev-10-0=10.0.130-1",
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
