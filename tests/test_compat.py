"""engine.compat: Theano configured before import, without overriding the user."""
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_DIR

# Every test here starts Python in a subprocess (a fresh Theano configuration).
pytestmark = pytest.mark.slow

SHOW = ("import engine, theano; print(theano.config.floatX); "
        "print(theano.config.blas.ldflags); print(theano.config.base_compiledir)")


def settings(tmp_path, flags, **more_env):
    env = dict(os.environ, THEANO_FLAGS=flags, HOME=str(tmp_path),
               THEANORC=str(tmp_path / "no-theanorc"))
    env.pop("XDG_CACHE_HOME", None)  # the user's own, if set, would decide the folder
    env.update(more_env)
    result = subprocess.run([sys.executable, "-c", SHOW], cwd=PROJECT_DIR, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:3], result.stderr


def test_defaults_float32_and_an_openblas(tmp_path):
    (floatx, ldflags, compiledir), _ = settings(tmp_path, "")
    assert floatx == "float32" and "openblas" in ldflags
    # the project's own compile folder, not the ~/.theano all Theano programs share
    assert compiledir == str(tmp_path / ".cache" / "preresnet-theano")
    assert os.stat(compiledir).st_mode & 0o777 == 0o700


def test_xdg_cache_home_is_respected(tmp_path):
    cache = tmp_path / "xdg"
    (_, _, compiledir), _ = settings(tmp_path, "", XDG_CACHE_HOME=str(cache))
    assert compiledir == str(cache / "preresnet-theano")


def test_the_users_flags_win(tmp_path):
    (floatx, ldflags, _), _ = settings(tmp_path, "floatX=float64,blas.ldflags=")
    assert floatx == "float64" and ldflags == ""


def test_a_compile_folder_others_can_write_is_not_used(tmp_path):
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(0o777)
    (_, _, compiledir), stderr = settings(tmp_path, "base_compiledir=%s" % shared)
    assert compiledir != str(shared)
    assert compiledir == str(tmp_path / ".cache" / "preresnet-theano")
    assert "not private" in stderr and str(shared) in stderr
    assert os.stat(compiledir).st_mode & 0o777 == 0o700


def test_a_private_compile_folder_is_used(tmp_path):
    own = tmp_path / "own-cache"
    own.mkdir(mode=0o755)
    (_, _, compiledir), stderr = settings(tmp_path, "base_compiledir=%s" % own)
    assert compiledir == str(own) and "not private" not in stderr
