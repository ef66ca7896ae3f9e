"""Shuffling and augmentation: per-image crops and flips, whole-batch."""
import numpy as np
import pytest

import utils


def reference_crop_and_flip(batch, dy, dx, flip, pad, mode):
    """The plain per-image loop the vectorised version must agree with."""
    out = np.empty_like(batch)
    for i, image in enumerate(batch):
        padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)),
                        mode="constant" if mode == "zero" else "reflect")
        crop = padded[:, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return out


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_every_pixel_lands_where_the_per_image_loop_puts_it(mode):
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(16, 3, 32, 32)).astype(np.float32)
    dy, dx = rng.integers(0, 9, 16), rng.integers(0, 9, 16)
    flip = rng.random(16) < 0.5
    out = utils.crop_and_flip(batch, dy, dx, flip, pad=4, mode=mode)
    np.testing.assert_array_equal(out, reference_crop_and_flip(batch, dy, dx, flip, 4, mode))


def test_centre_crop_without_flip_is_the_identity():
    batch = np.random.default_rng(1).normal(size=(4, 3, 32, 32)).astype(np.float32)
    same = utils.crop_and_flip(batch, np.full(4, 4), np.full(4, 4), np.zeros(4, bool))
    np.testing.assert_array_equal(same, batch)


def test_shift_and_zero_border_and_flip_by_hand():
    image = np.arange(3 * 32 * 32, dtype=np.float32).reshape(1, 3, 32, 32) + 1
    # Corner offset (0, 0): the image moves 4 down and 4 right, zeros enter.
    out = utils.crop_and_flip(image, np.array([0]), np.array([0]), np.array([False]))
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, :, :4] == 0).all()
    np.testing.assert_array_equal(out[0, :, 4:, 4:], image[0, :, :28, :28])
    # Offset (8, 8): moves up-left.
    out = utils.crop_and_flip(image, np.array([8]), np.array([8]), np.array([False]))
    np.testing.assert_array_equal(out[0, :, :28, :28], image[0, :, 4:, 4:])
    assert (out[0, :, 28:, :] == 0).all()
    # Flip only: columns reversed, channels and rows untouched.
    out = utils.crop_and_flip(image, np.array([4]), np.array([4]), np.array([True]))
    np.testing.assert_array_equal(out[0], image[0, :, :, ::-1])


def test_offsets_and_flips_differ_per_image():
    plan = utils.epoch_plan(seed=0, epoch=0, count=1000, pad=4)
    assert sorted(plan["order"]) == list(range(1000))
    assert set(np.unique(plan["dy"])) == set(range(9)) == set(np.unique(plan["dx"]))
    assert 400 < plan["flip"].sum() < 600
    batch_of_128 = slice(0, 128)
    assert len(set(zip(plan["dy"][batch_of_128], plan["dx"][batch_of_128]))) > 30


def test_epoch_plans_depend_only_on_seed_and_epoch():
    a = utils.epoch_plan(3, 5, 100, 4)
    b = utils.epoch_plan(3, 5, 100, 4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["order"], utils.epoch_plan(3, 6, 100, 4)["order"])
    assert not np.array_equal(a["order"], utils.epoch_plan(4, 5, 100, 4)["order"])


# -- the batch worker -------------------------------------------------------------

import threading  # noqa: E402
import time  # noqa: E402

from engine import loop  # noqa: E402


def test_prefetcher_yields_in_order_and_stops_cleanly_when_full():
    loader = loop.Prefetcher(lambda i: i * i, range(3), depth=2)
    assert next(iter(loader)) == 0
    # the worker queues 1 and 4, then waits to queue its end mark: wait for
    # that state (a fixed sleep may end before it on a loaded machine, and the
    # test would close an idle worker)
    deadline = time.time() + 60
    while not loader._queue.full():
        assert time.time() < deadline, "the worker never filled its queue"
        time.sleep(0.01)
    assert loader._thread.is_alive()
    closer = threading.Thread(target=loader.close)
    closer.start()
    closer.join(timeout=5)
    assert not closer.is_alive()  # the worker, blocked on a full queue, gave up
    assert list(loop.Prefetcher(lambda i: i, range(5))) == [0, 1, 2, 3, 4]


def test_prefetcher_passes_worker_errors_to_the_consumer():
    def make(i):
        if i == 2:
            raise ValueError("bad batch %d" % i)
        return i

    loader = loop.Prefetcher(make, range(5))
    with pytest.raises(ValueError, match="bad batch 2"):
        list(loader)
    loader.close()
