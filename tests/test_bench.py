"""The benchmark's baseline: bench/speed.py builds each network a second
time with stock Lasagne 0.1 layers and textbook batch normalisation
(install_plain_layers). The baseline must build and train the very network
models.py builds, or every "ours / plain" figure compares two networks."""
import json
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_DIR


def speed_child(impl, variant, depth, width=1):
    spec = {"impl": impl, "variant": variant, "depth": depth, "width": width, "steps": 1,
            "pairs": 0, "eval_images": 10, "eval_images_plain": 2}
    done = subprocess.run([sys.executable, os.path.join("bench", "speed.py"), "--child",
                           json.dumps(spec)], cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=900)
    results = [line[len("RESULT "):] for line in done.stdout.splitlines()
               if line.startswith("RESULT ")]
    assert done.returncode == 0 and len(results) == 1, done.stderr[-3000:]
    return json.loads(results[0])


@pytest.mark.slow  # two processes compiling a network each (about 1 minute)
@pytest.mark.parametrize("network", [("normal", 1), ("wide", 1, 2)])
def test_the_plain_baseline_trains_the_same_network(network):
    plain, ours = speed_child("baseline", *network), speed_child("ours", *network)
    assert plain["macs"] == ours["macs"] > 0
    assert plain["batch"] == ours["batch"] == 128
    assert plain["train_img_s"] > 0 and plain["eval_img_s"] > 0, plain
