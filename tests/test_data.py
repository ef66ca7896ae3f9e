"""Loading, checking and downloading CIFAR; normalisation; safe unpickling."""
import gzip
import hashlib
import io
import os
import pickle
import tarfile
import tracemalloc

import numpy as np
import pytest

import utils
from conftest import RunsCode, make_images, pairs, python2_pickle, write_batch, write_tiny_cifar10
from utils import UserError


def quiet(*args):
    pass


def test_loads_a_cifar10_folder(tiny_data):
    data = utils.load_dataset("cifar10", str(tiny_data), log=quiet)
    assert data["train_x"].shape == (200, 3, 32, 32) and data["train_x"].dtype == np.uint8
    assert data["test_x"].shape == (100, 3, 32, 32)
    assert data["train_y"].dtype == np.int32 and data["train_y"].max() < 10
    assert data["label_names"][0] == "airplane"
    # Rows of 3072 bytes are the R plane, then G, then B.
    images, labels = make_images(40, 1)
    np.testing.assert_array_equal(data["train_x"][:40], images)
    np.testing.assert_array_equal(data["train_y"][:40], labels)


def test_reads_python2_pickles_with_bytes_keys(tmp_path):
    """The official files are Python 2 pickles: str keys arrive as bytes or
    latin-1 text, the pixels as one string."""
    folder = write_tiny_cifar10(tmp_path)
    images, labels = make_images(40, 1)
    path = os.path.join(folder, "data_batch_1")
    with open(path, "wb") as f:
        pickle.dump({b"data": images.reshape(40, -1), b"labels": labels.tolist(),
                     b"batch_label": b"x"}, f, protocol=2)
    data = utils.load_dataset("cifar10", str(tmp_path), log=quiet)
    np.testing.assert_array_equal(data["train_x"][:40], images)


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images, labels = make_images(60, 3, num_classes=100)
    write_batch(folder / "train", images, labels, label_key="fine_labels")
    write_batch(folder / "test", images[:20], labels[:20], label_key="fine_labels")
    data = utils.load_dataset("cifar100", str(tmp_path), log=quiet)
    assert data["train_x"].shape == (60, 3, 32, 32)
    np.testing.assert_array_equal(data["train_y"], labels)
    assert len(data["label_names"]) == 100


def test_md5_mismatch_is_a_warning_naming_the_files(tiny_data):
    messages = []
    utils.load_dataset("cifar10", str(tiny_data), log=messages.append)
    warning = [m for m in messages if "differ from the official release" in m]
    assert len(warning) == 1 and "data_batch_1" in warning[0] and "test_batch" in warning[0]


def _corrupt(folder, name, content):
    with open(os.path.join(folder, "cifar-10-batches-py", name), "wb") as f:
        f.write(content)


def _pickled(obj):
    return pickle.dumps(obj, protocol=2)


BAD_BATCHES = {
    "truncated": lambda: _pickled({"data": np.zeros((40, 3072), np.uint8),
                                   "labels": [0] * 40})[:-500],
    "wrong_shape": lambda: _pickled({"data": np.zeros((40, 3000), np.uint8),
                                     "labels": [0] * 40}),
    "wrong_dtype": lambda: _pickled({"data": np.zeros((40, 3072), np.float32),
                                     "labels": [0] * 40}),
    "label_out_of_range": lambda: _pickled({"data": np.zeros((40, 3072), np.uint8),
                                            "labels": [0] * 39 + [10]}),
    "negative_label": lambda: _pickled({"data": np.zeros((40, 3072), np.uint8),
                                        "labels": [-1] + [0] * 39}),
    "count_mismatch": lambda: _pickled({"data": np.zeros((40, 3072), np.uint8),
                                        "labels": [0] * 39}),
    "not_a_dict": lambda: _pickled([1, 2, 3]),
    "empty_file": lambda: b"",
}
EXPECTED_WORDS = {"truncated": "truncated", "wrong_shape": "shape", "wrong_dtype": "uint8",
                  "label_out_of_range": "0..9", "negative_label": "0..9",
                  "count_mismatch": "40 images but 39 labels", "not_a_dict": "not a CIFAR",
                  "empty_file": "truncated"}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_bad_batch_is_refused_naming_the_file(tiny_data, case):
    _corrupt(tiny_data, "data_batch_3", BAD_BATCHES[case]())
    with pytest.raises(UserError) as error:
        utils.load_dataset("cifar10", str(tiny_data), log=quiet)
    message = str(error.value)
    assert "data_batch_3" in message and EXPECTED_WORDS[case] in message
    assert "\n" not in message


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tiny_data, tmp_path):
    witness = tmp_path / "pwned"
    _corrupt(tiny_data, "test_batch", _pickled({"data": RunsCode("touch %s" % witness),
                                               "labels": []}))
    with pytest.raises(UserError, match="test_batch.*refused"):
        utils.load_dataset("cifar10", str(tiny_data), log=quiet)
    assert not witness.exists()


def test_eval_and_arbitrary_globals_are_refused():
    for payload in (b"cbuiltins\neval\n(S'1+1'\ntR.", b"cos\nsystem\n(S'true'\ntR."):
        with pytest.raises(UserError, match="refused"):
            utils.safe_unpickle(payload, "evil.pkl")


def test_missing_files_are_named(tiny_data):
    os.remove(os.path.join(tiny_data, "cifar-10-batches-py", "data_batch_5"))
    with pytest.raises(UserError, match="missing data_batch_5"):
        utils.load_dataset("cifar10", str(tiny_data), log=quiet)


# -- download -------------------------------------------------------------------


def _archive_of(folder_parent, tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(os.path.join(folder_parent, "cifar-10-batches-py"), "cifar-10-batches-py")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_download_checks_md5_and_extracts(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_tiny_cifar10(source)
    archive, md5 = _archive_of(source, tmp_path)
    monkeypatch.setitem(utils.DATASETS["cifar10"], "archive_md5", md5)
    target = tmp_path / "data"
    messages = []
    utils.fetch_dataset("cifar10", str(target), url=archive.as_uri(), log=messages.append)
    assert (target / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert not [p for p in os.listdir(target) if p.startswith(".extract-") or p.endswith(".part")]
    data = utils.load_dataset("cifar10", str(target), download=False, log=quiet)
    assert len(data["train_x"]) == 200


def test_download_with_wrong_md5_is_refused_and_leaves_no_folder(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_tiny_cifar10(source)
    archive, _ = _archive_of(source, tmp_path)
    target = tmp_path / "data"
    with pytest.raises(UserError, match="md5"):
        utils.fetch_dataset("cifar10", str(target), url=archive.as_uri(), log=quiet)
    assert not (target / "cifar-10-batches-py").exists()


def test_offline_download_names_url_and_folder(tmp_path):
    target = tmp_path / "data"
    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # discard port: refused
    with pytest.raises(UserError) as error:
        utils.fetch_dataset("cifar10", str(target), url=url, log=quiet)
    message = str(error.value)
    assert url in message and str(target) in message and "cifar-10-batches-py" in message
    assert os.listdir(target) == []  # no partial download left behind


def test_archive_with_unsafe_member_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        payload = b"x"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    monkeypatch.setitem(utils.DATASETS["cifar10"], "archive_md5",
                        hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(UserError, match="unexpected member"):
        utils.fetch_dataset("cifar10", str(archive.parent), log=quiet)
    assert not (tmp_path / "escaped").exists()


# -- normalisation ----------------------------------------------------------------


def test_channel_statistics_come_from_the_images_used():
    images, _ = make_images(50, 7)
    stats = utils.normalisation_stats("channel_mean_std", images)
    assert stats["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(stats["mean"].ravel(), images.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats["std"].ravel(), images.std(axis=(0, 2, 3)), rtol=1e-5)
    out = utils.normalise(images, stats)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_pixel_mean_is_subtracted_without_scaling():
    images, _ = make_images(50, 8)
    stats = utils.normalisation_stats("pixel_mean", images)
    assert stats["mean"].shape == (3, 32, 32)
    np.testing.assert_allclose(utils.normalise(images, stats),
                               images - images.mean(axis=0), rtol=1e-4, atol=1e-3)


# -- weights files ----------------------------------------------------------------


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, format=np.array(["x", None], dtype=object))
    with pytest.raises(UserError, match="pickled objects"):
        utils.read_npz(str(path))


@pytest.mark.parametrize("writer", ["python2", "python3"])
def test_old_pklz_list_of_arrays_is_read_value_for_value(tmp_path, writer):
    """The old repository's files are gzip'd Python 2 pickles (protocol 0: the
    raw bytes of each array as a str with escapes, read as latin-1); the same
    list pickled by Python 3 reads the same. Every value, in order, float32;
    every byte value occurs in the arrays' data."""
    rng = np.random.default_rng(3)
    arrays = [rng.normal(0, 0.1, (16, 3, 3, 3)).astype(np.float32),
              rng.uniform(0.5, 2, 16).astype(np.float32),
              np.frombuffer(bytes(range(256)) * 2, np.float32).copy(),
              np.array([-0.0, 1e-38, 3.4e38, 7.25], np.float32)]
    arrays[2][~np.isfinite(arrays[2])] = 0.5
    path = tmp_path / "old.pklz"
    with gzip.open(path, "wb") as f:
        if writer == "python2":
            f.write(python2_pickle(arrays))
        else:
            pickle.dump(arrays, f, protocol=0)
    values = utils.read_old_pklz(str(path))
    for value, array in pairs(values, arrays):
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, array)


def test_atomic_write_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "state.npz"
    utils.atomic_write(str(path), lambda f: np.savez(f, a=np.arange(3)))

    def fail(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match="No space left on device.*previous version is intact"):
        utils.atomic_write(str(path), fail)
    np.testing.assert_array_equal(utils.read_npz(str(path))["a"], np.arange(3))
    assert os.listdir(tmp_path) == ["state.npz"]


# -- where the data is, and what the files look like --------------------------------


def test_data_dir_that_is_a_file_a_typo_or_the_dataset_folder_is_refused(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        utils.load_dataset("cifar10", str(a_file), log=quiet)
    typo = tmp_path / "dtaa"
    with pytest.raises(UserError, match="does not exist; check the path"):
        utils.load_dataset("cifar10", str(typo), log=quiet)
    assert not typo.exists()  # never created on a typo
    dataset_folder = write_tiny_cifar10(tmp_path / "data")
    with pytest.raises(UserError) as error:
        utils.load_dataset("cifar10", dataset_folder, log=quiet)
    assert "--data-dir %s" % (tmp_path / "data") in str(error.value)


def test_an_archive_the_user_put_there_is_extracted_with_a_warning(tmp_path):
    source = tmp_path / "source"
    write_tiny_cifar10(source)
    target = tmp_path / "data"
    target.mkdir()
    archive, _ = _archive_of(source, target)  # not the official md5, like a rebuilt copy
    messages = []
    data = utils.load_dataset("cifar10", str(target), log=messages.append)
    assert len(data["train_x"]) == 200
    assert any("differs from the official archive" in m for m in messages)


def test_written_files_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        utils.write_json(str(tmp_path / "a.json"), {"x": 1})
        os.umask(0o077)
        utils.write_json(str(tmp_path / "b.json"), {"x": 1})
        utils.write_json(str(tmp_path / "a.json"), {"x": 2})  # a replaced file keeps its mode
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_statistics_match_numpy_on_the_whole_set_and_use_no_float64_copy():
    images, _ = make_images(4 * utils.STATS_CHUNK + 100, 3)  # five chunks
    whole = images.astype(np.float64)
    stats = utils.normalisation_stats("channel_mean_std", images)
    np.testing.assert_array_equal(stats["mean"],
                                  whole.mean(axis=(0, 2, 3)).reshape(3, 1, 1).astype(np.float32))
    np.testing.assert_allclose(stats["std"], whole.std(axis=(0, 2, 3)).reshape(3, 1, 1),
                               rtol=1e-6)
    pixel = utils.normalisation_stats("pixel_mean", images)
    np.testing.assert_array_equal(pixel["mean"], whole.mean(axis=0).astype(np.float32))
    tracemalloc.start()
    utils.normalisation_stats("channel_mean_std", images)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < whole.nbytes / 3, peak  # a chunk at a time, not a copy of the set
