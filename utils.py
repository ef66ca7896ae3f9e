"""Data and files: CIFAR loading and checking, download, normalisation,
augmentation, weights files and run records.

The dataset is held as one uint8 array per split, shape (N, 3, 32, 32)
(the cifar10-airbench way); normalisation and augmentation are whole-batch
array operations. Nothing read from a file ever runs code: pickles go through
a restricted unpickler and ``.npz`` files are read with ``allow_pickle=False``.

Every problem a user can cause (missing, corrupt or wrong files, no network)
raises ``UserError`` with a one-line message that says what to do; the
command-line programs print it and exit non-zero.
"""
import csv
import hashlib
import io
import json
import math
import os
import pickle
import re
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib

import numpy as np

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(PROJECT_DIR, "data")


def published_weights_path(data_dir, network_name, recipe_name, dropout=0.0):
    """Where a full-recipe run publishes its weights and test_model.py looks for
    them: ``<data folder>/weights/<network>/<recipe>[-dropout<p>].npz``, one
    file per network, recipe and dropout (data/weights/ by default)."""
    name = recipe_name + ("-dropout%g" % dropout if dropout else "")
    return os.path.join(published_weights_dir(data_dir, network_name), name + ".npz")


def published_weights_dir(data_dir, network_name):
    return os.path.join(os.path.abspath(data_dir or DEFAULT_DATA_DIR), "weights",
                        network_name)


class UserError(Exception):
    """A problem the user can fix; the message says how. Printed as one line."""


class DamagedFile(UserError):
    """A file of this project whose bytes changed since it was written, or that
    ends early; the message names the file, which of the two, and what to do."""


# =============================================================================
# Datasets

DATASETS = {
    # https://www.cs.toronto.edu/~kriz/cifar.html; per-file md5s as published
    # with torchvision's CIFAR loaders.
    "cifar10": {
        "display": "CIFAR-10",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "archive_md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train_files": ["data_batch_%d" % i for i in range(1, 6)],
        "test_files": ["test_batch"],
        "images_per_file": 10000,
        "meta_file": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "num_classes": 10,
        "file_md5": {
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    },
    "cifar100": {
        "display": "CIFAR-100",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "archive_md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train_files": ["train"],
        "test_files": ["test"],
        "images_per_file": None,  # one file of 50,000 and one of 10,000
        "meta_file": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "num_classes": 100,
        "file_md5": {
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    },
}
IMAGE_SHAPE = (3, 32, 32)


# =============================================================================
# Safe unpickling: plain containers and numpy arrays only

# The globals a CIFAR batch or the old repository's weight list needs, under
# the module names numpy 1.x and 2.x pickle them with. Anything else (os.system,
# builtins.eval, ...) is refused before it can be called.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): np.core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): np.core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,  # Python 3 bytes at protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                "it refers to %s.%s, which a data file never needs" % (module, name))


def safe_unpickle(data, path):
    """Unpickle ``data`` (bytes) read from ``path`` without running its code.

    Python 2 strings are decoded as latin-1 (how numpy's own Python 2 pickles
    must be read). Raises UserError naming ``path`` for anything that is not a
    plain container of numbers, strings and numpy arrays, or is truncated.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise UserError("%s: refused to unpickle (%s); it is not a CIFAR or "
                        "weights file, or it was tampered with" % (path, error))
    except (EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, MemoryError) as error:
        raise UserError("%s: unreadable or truncated pickle (%s: %s); download "
                        "or rebuild it" % (path, type(error).__name__, error))


def _plain_keys(obj):
    """Python 2 pickles may carry bytes keys; make every key a str."""
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v
                for k, v in obj.items()}
    return obj


# =============================================================================
# Loading and checking


def _read_batch(path, spec):
    """Read one CIFAR batch file: (images uint8 (N, 3, 32, 32), labels int32)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise UserError("%s: cannot read (%s)" % (path, error.strerror))
    batch = _plain_keys(safe_unpickle(raw, path))
    key = spec["label_key"]
    if not isinstance(batch, dict) or "data" not in batch or key not in batch:
        raise UserError("%s: not a CIFAR batch (expected a dict with 'data' and %r)"
                        % (path, key))
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise UserError("%s: 'data' must be a uint8 array, found %s"
                        % (path, getattr(data, "dtype", type(data).__name__)))
    if data.ndim != 2 or data.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise UserError("%s: 'data' must have shape (N, 3072), found %s"
                        % (path, data.shape))
    try:
        labels = np.asarray(batch[key])
        valid_type = labels.ndim == 1 and (labels.size == 0 or
                                           np.issubdtype(labels.dtype, np.integer))
    except (TypeError, ValueError):
        valid_type = False
    if not valid_type:
        raise UserError("%s: %r must be a list of integers" % (path, key))
    if len(labels) != len(data):
        raise UserError("%s: %d images but %d labels" % (path, len(data), len(labels)))
    if len(labels) and (labels.min() < 0 or labels.max() >= spec["num_classes"]):
        raise UserError("%s: labels must lie in 0..%d, found %d..%d"
                        % (path, spec["num_classes"] - 1, labels.min(), labels.max()))
    return data.reshape((-1,) + IMAGE_SHAPE), labels.astype(np.int32)


def _md5(path, chunk=1 << 20):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_dataset(name="cifar10", data_dir=None, download=True, log=print):
    """Load CIFAR-10 or CIFAR-100 from ``data_dir``, downloading it if missing.

    Parameters
    ----------
    name : {'cifar10', 'cifar100'}
    data_dir : str or None
        The folder holding ``cifar-10-batches-py/`` (or ``cifar-100-python/``),
        or the archive to extract; the project's ``data/`` by default.
    download : bool
        Fetch the official archive when neither is there.
    log : callable
        Where progress and warnings go.

    Returns
    -------
    dict
        ``train_x``, ``test_x`` (uint8, N x 3 x 32 x 32), ``train_y``,
        ``test_y`` (int32), ``label_names``, ``folder`` and
        ``unofficial_files`` (the files whose md5 is not the official one).
    """
    spec = DATASETS[name]
    data_dir = os.path.abspath(data_dir or DEFAULT_DATA_DIR)
    if data_dir == DEFAULT_DATA_DIR:
        os.makedirs(data_dir, exist_ok=True)
    check_data_dir(data_dir, spec)
    folder = os.path.join(data_dir, spec["folder"])
    if not os.path.isdir(folder):
        if not download:
            raise UserError("%s not found: put the extracted %s/ there"
                            % (folder, spec["folder"]))
        fetch_dataset(name, data_dir, log=log)
    missing = [f for f in spec["train_files"] + spec["test_files"]
               if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise UserError("%s: missing %s; delete the folder to download it again, or "
                        "copy the complete official files there"
                        % (folder, ", ".join(missing)))
    unofficial = _warn_unofficial_files(folder, spec, log)

    splits = {}
    for split in ("train", "test"):
        parts = [_read_batch(os.path.join(folder, f), spec)
                 for f in spec[split + "_files"]]
        for file_name, (x, _) in zip(spec[split + "_files"], parts):
            expected = spec["images_per_file"] or (50000 if split == "train" else 10000)
            if len(x) != expected:
                log("warning: %s holds %d images; the official file holds %d"
                    % (os.path.join(folder, file_name), len(x), expected))
        splits[split + "_x"] = np.concatenate([x for x, _ in parts])
        splits[split + "_y"] = np.concatenate([y for _, y in parts])
    splits["label_names"] = _label_names(folder, spec)
    splits["folder"] = folder
    splits["unofficial_files"] = unofficial
    return splits


def check_data_dir(data_dir, spec):
    """UserError for a data folder that is not one: a file, a path that does
    not exist (never created on a typo), or the dataset's own folder given
    instead of its parent."""
    if os.path.basename(os.path.normpath(data_dir)) == spec["folder"] and \
            os.path.isdir(data_dir):
        raise UserError("%s is the dataset folder itself; pass the folder that holds it: "
                        "--data-dir %s" % (data_dir, os.path.dirname(os.path.normpath(data_dir))))
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError("--data-dir %s is a file, not a folder; pass the folder that holds "
                        "(or will hold) %s/" % (data_dir, spec["folder"]))
    if not os.path.exists(data_dir):
        raise UserError("--data-dir %s does not exist; check the path, or create the folder "
                        "for the dataset to be downloaded into" % data_dir)


def _label_names(folder, spec):
    path = os.path.join(folder, spec["meta_file"])
    fallback = ["class %d" % i for i in range(spec["num_classes"])]
    if not os.path.isfile(path):
        return fallback
    with open(path, "rb") as f:
        meta = _plain_keys(safe_unpickle(f.read(), path))
    names = meta.get(spec["names_key"]) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != spec["num_classes"]:
        return fallback
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _warn_unofficial_files(folder, spec, log):
    """An md5 mismatch is worth a warning, not a refusal: a rebuilt copy (such
    as a JPEG round trip of the images) differs from the official bytes but is
    a legitimate dataset; _read_batch still checks its structure."""
    differing = [f for f, digest in spec["file_md5"].items()
                 if os.path.isfile(os.path.join(folder, f))
                 and _md5(os.path.join(folder, f)) != digest]
    if differing:
        log("warning: %d file(s) in %s differ from the official release (md5): %s; "
            "numbers measured on them are not the official test set's"
            % (len(differing), folder, ", ".join(differing)))
    return differing


# =============================================================================
# Download


def fetch_dataset(name, data_dir, url=None, log=print):
    """Download (unless the archive is already in ``data_dir``), check its md5
    and extract it. Extraction goes to a temporary folder that is renamed into
    place at the end, so an interrupted run never leaves a half-written folder.
    """
    spec = DATASETS[name]
    url = url or spec["url"]
    os.makedirs(data_dir, exist_ok=True)
    archive = os.path.join(data_dir, os.path.basename(spec["url"]))
    if not os.path.isfile(archive):
        _download(url, archive, spec, data_dir, log)
        if _md5(archive) != spec["archive_md5"]:
            digest = _md5(archive)
            os.remove(archive)
            raise UserError("the download of %s has md5 %s, not the official %s (a broken "
                            "transfer?): deleted it; run again" % (url, digest,
                                                                  spec["archive_md5"]))
    elif _md5(archive) != spec["archive_md5"]:
        # An archive the user put there is treated like an extracted folder:
        # its files' structure is checked, a differing md5 is only reported.
        log("warning: %s differs from the official archive (md5); extracting it anyway: "
            "numbers measured on it are not the official test set's" % archive)
    staging = tempfile.mkdtemp(prefix=".extract-", dir=data_dir)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                target = os.path.realpath(os.path.join(staging, member.name))
                if not (member.isfile() or member.isdir()) or \
                        not target.startswith(os.path.realpath(staging) + os.sep):
                    raise UserError("%s: unexpected member %r; not the official archive"
                                    % (archive, member.name))
            tar.extractall(staging)
        extracted = os.path.join(staging, spec["folder"])
        if not os.path.isdir(extracted):
            raise UserError("%s holds no %s/ folder; not the official archive"
                            % (archive, spec["folder"]))
        os.rename(extracted, os.path.join(data_dir, spec["folder"]))
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError("%s: cannot extract (%s); replace it with a good copy, or delete "
                        "it and run again online to download it afresh" % (archive, error))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log("extracted %s into %s" % (os.path.basename(archive), data_dir))


def _download(url, archive, spec, data_dir, log):
    partial = archive + ".part"
    log("downloading %s" % url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, \
                open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, shown = 0, 0.0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                if time.time() - shown > 0.5 or done == total:
                    shown = time.time()
                    sys.stderr.write("\r  %.1f / %s MB%s" % (
                        done / 1e6, "%.1f" % (total / 1e6) if total else "?",
                        " (%d%%)" % (100 * done // total) if total else ""))
                    sys.stderr.flush()
        sys.stderr.write("\n")
        os.replace(partial, archive)
    except (urllib.error.URLError, OSError, ValueError) as error:
        if os.path.exists(partial):
            os.remove(partial)
        reason = getattr(error, "reason", error)
        raise UserError("cannot download %s (%s): put %s or its extracted folder %s/ "
                        "into %s, or pass --data-dir"
                        % (url, reason, os.path.basename(archive), spec["folder"],
                           data_dir))


# =============================================================================
# Normalisation (part of the recipe; the statistics travel with the weights)


STATS_CHUNK = 1000  # images per chunk of the statistics' float64 temporaries


def normalisation_stats(kind, images):
    """Statistics of the training images actually used.

    Parameters
    ----------
    kind : {'channel_mean_std', 'pixel_mean'}
        ``channel_mean_std``: per-channel mean and standard deviation, as the
        authors' Torch code normalises (fb.resnet.torch hard-codes them for the
        full CIFAR-10 training set: mean 125.3, 123.0, 113.9 and std 63.0,
        62.1, 66.7 on 0-255 pixels). ``pixel_mean``: the mean image, subtracted
        with no scaling (the old repository).
    images : uint8 array (N, 3, 32, 32)

    Returns
    -------
    dict
        ``kind``, ``mean`` and ``std`` (float32 arrays broadcasting against a
        (batch, 3, 32, 32) batch).
    """
    # In chunks: a float64 copy of 50,000 images would take 1.2 GB. The sums
    # of uint8 pixels are exact integers, so the means are exactly numpy's.
    if kind not in ("channel_mean_std", "pixel_mean"):
        raise ValueError("unknown normalisation %r" % kind)
    chunks = [slice(start, start + STATS_CHUNK) for start in range(0, len(images), STATS_CHUNK)]
    if kind == "pixel_mean":
        total = sum(images[c].sum(axis=0, dtype=np.int64) for c in chunks)
        mean, std = total / len(images), np.ones((1, 1, 1))
    else:
        pixels = len(images) * images.shape[2] * images.shape[3]
        total = sum(images[c].sum(axis=(0, 2, 3), dtype=np.int64) for c in chunks)
        mean = (total / pixels).reshape(3, 1, 1)
        squares = sum(_squared_deviations(images[c], mean) for c in chunks)
        std = np.sqrt(squares / pixels).reshape(3, 1, 1)
    return {"kind": kind, "mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def _squared_deviations(images, mean):
    """Per-channel sums of (x - mean)^2, with one float64 temporary."""
    deviations = images - mean
    np.square(deviations, out=deviations)
    return deviations.sum(axis=(0, 2, 3))


def normalise(images, stats):
    """uint8 images -> float32 network input."""
    return (images.astype(np.float32) - stats["mean"]) / stats["std"]


# =============================================================================
# Shuffling and augmentation


def epoch_plan(seed, epoch, count, pad):
    """The order and the per-image crop offsets and flips of one epoch.

    Drawn from a generator seeded with ``(seed, epoch)`` alone, so an epoch is
    the same whether or not the run was interrupted before it, and a resumed
    run needs no generator state beyond the seed and the epoch number.

    Returns
    -------
    dict of arrays, each of length ``count``
        ``order`` (a permutation), ``dy``, ``dx`` (offsets in 0..2*pad) and
        ``flip`` (bool), indexed by position in the epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    return {"order": rng.permutation(count),
            "dy": rng.integers(0, 2 * pad + 1, count),
            "dx": rng.integers(0, 2 * pad + 1, count),
            "flip": rng.random(count) < 0.5}


def crop_and_flip(batch, dy, dx, flip, pad=4, mode="zero"):
    """Pad each image by ``pad``, crop it back at its own offset, flip some.

    One gather over the whole batch, no Python loop per image.

    Parameters
    ----------
    batch : float32 array (B, C, H, W)
        Normalised images (zero padding is then zero in normalised space, as
        in fb.resnet.torch, where ColorNormalize precedes RandomCrop).
    dy, dx : int arrays (B,)
        Top-left corner of each crop in the padded image, 0..2*pad; ``pad``
        for both leaves an image where it was.
    flip : bool array (B,)
        Mirror left-right.
    pad : int
    mode : {'zero', 'reflect'}
        What fills the border: zeros (fb.resnet.torch) or the image mirrored
        (the WRN authors' ``randomcrop_type=reflection``).
    """
    b, c, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad)),
                    mode="constant" if mode == "zero" else "reflect")
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.arange(w)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(b)[:, None, None, None],
                  np.arange(c)[None, :, None, None],
                  rows[:, None, :, None],
                  cols[:, None, None, :]]


def split_training_data(data, val_size, limit, seed):
    """The training images a run uses (the first ``limit``, 0 for all) and a
    validation split of ``val_size`` of them, drawn with the run's seed:
    ``(train_x, train_y, val_x, val_y)``."""
    images, labels = data["train_x"], data["train_y"]
    if limit:
        images, labels = images[:limit], labels[:limit]
    if val_size >= len(images):
        raise UserError("--val-size %d leaves no training images out of %d; "
                        "lower --val-size or raise --limit" % (val_size, len(images)))
    if val_size:
        order = np.random.default_rng([seed, 1]).permutation(len(images))
        train, val = order[val_size:], order[:val_size]
        return images[train], labels[train], images[val], labels[val]
    return images, labels, images[:0], labels[:0]


def batch_positions(count, batch_size, drop_last):
    """Start and end positions of the batches of an epoch."""
    stops = count - count % batch_size if drop_last else count
    return [(start, min(start + batch_size, count)) for start in range(0, stops, batch_size)]


def make_batch(images, labels, plan, start, stop, stats, pad, pad_mode):
    """Training batch ``start:stop`` of an epoch's ``plan`` (``epoch_plan``):
    normalised, padded, cropped and flipped."""
    picks = plan["order"][start:stop]
    batch = normalise(images[picks], stats)
    batch = crop_and_flip(batch, plan["dy"][start:stop], plan["dx"][start:stop],
                          plan["flip"][start:stop], pad, pad_mode)
    return batch, labels[picks]


# =============================================================================
# Files written safely


def atomic_write(path, write):
    """Create ``path`` through ``write(fileobj)`` atomically.

    The bytes go to a temporary file in the same folder, are flushed and
    fsync'ed, then renamed over ``path``: a reader sees the old file or the
    new one, never a half-written one. The file gets the mode a plain
    ``open(path, 'w')`` would give it (the umask's, or the replaced file's).
    On failure (disk full, permissions) the temporary file is removed, the old
    file is left as it was, and UserError says so.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as error:  # a full disk, or Ctrl-C while writing
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        if not isinstance(error, OSError):
            raise
        kept = " (the previous version is intact)" if os.path.exists(path) else ""
        raise UserError("could not write %s: %s%s" % (path, error.strerror or error, kept))


def unwritable(folder):
    """Why files cannot be created in ``folder``, or None when they can.

    Tried, not read from permission bits (root ignores them; read-only mounts
    and quotas do not show in them): the missing folders are made, a file is
    written there and removed, and the folders made are removed again, so
    that the check leaves nothing behind.
    """
    folder = os.path.abspath(folder)
    missing, existing = [], folder
    while not os.path.isdir(existing):
        if os.path.lexists(existing):
            return "%s is a file, not a folder" % existing
        missing.append(existing)
        existing = os.path.dirname(existing)
    made = []
    try:
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except OSError as error:
                return "%s cannot be made (%s)" % (path, error.strerror or error)
            made.append(path)
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
            os.close(fd)
            os.remove(probe)
        except OSError as error:
            return "no file can be written in %s (%s)" % (folder, error.strerror or error)
    finally:
        for path in reversed(made):
            try:
                os.rmdir(path)
            except OSError:
                pass
    return None


def free_bytes(folder):
    """Bytes this user may still write on the file system that holds (or
    will hold) ``folder``, and that file system's device number."""
    existing = os.path.abspath(folder)
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    status = os.statvfs(existing)
    return status.f_bavail * status.f_frsize, os.stat(existing).st_dev


def _mode_for(path):
    """The permission bits ``open(path, 'w')`` would leave ``path`` with."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def savez(fileobj, arrays):
    """Write ``arrays`` (a dict) as an uncompressed ``.npz`` without pickles.

    Unlike ``np.savez``, it closes the archive when a write fails (a full
    disk), so nothing is left to fail again when Python collects it."""
    with zipfile.ZipFile(fileobj, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError("cannot store %r in JSON" % (value,))


ZIP_SIGNATURE = b"PK\x03\x04"  # how every .npz (a zip archive) begins


def read_npz(path, what="weights", advice="copy it again from where it came"):
    """Load every array of an ``.npz`` without unpickling anything.

    A file that cannot be read is one UserError: a ``DamagedFile`` when it is
    an archive of ours whose bytes changed (a checksum or a header no longer
    matches) or that ends early (a copy or a disk cut short), each followed by
    ``advice`` (what to do); else it is not an ``.npz`` at all.
    """
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(len(ZIP_SIGNATURE))
        if head == ZIP_SIGNATURE or not head:
            raise DamagedFile("%s is truncated (%s bytes, its end is missing): %s"
                              % (path, format(os.path.getsize(path), ","), advice))
        raise UserError("%s: not an .npz file (a %s file of this project is a zip of "
                        "arrays)" % (path, what))
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise UserError("%s: no such %s file" % (path, what))
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise UserError("%s: holds pickled objects, which are never loaded; "
                            "not a %s file of this project" % (path, what))
        # an array's header no longer parses
        raise DamagedFile("%s is damaged (%s): %s" % (path, error, advice))
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as error:
        # BadZipFile: "Bad CRC-32 for file 'param_003.npy'", a header's bad magic
        # number; EOFError: a member ends early
        reason = re.sub(r"^Bad CRC-32 for file '(.*)'$", r"checksum of \1 wrong",
                        str(error)) or type(error).__name__
        raise DamagedFile("%s is damaged (%s): %s" % (path, reason, advice))
    except OSError as error:
        raise UserError("%s: cannot read this %s file (%s)"
                        % (path, what, error.strerror or error))


def read_npz_record(path, key):
    """The JSON record ``key`` of an ``.npz`` written by ``write_weights``
    (None where the file has none), reading that entry alone."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz[key])) if key in npz.files else None
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, KeyError):
        read_npz(path)  # says what is wrong with the file
        raise


def damaged_checkpoint_advice(run_dir):
    """What to do about a damaged checkpoint of ``run_dir``: nothing older is
    kept to resume from; the run's command (from its config.json) starts it
    again elsewhere; its other weights files may still be evaluated."""
    kept = [name for name in ("weights_final.npz", "weights_best.npz")
            if os.path.isfile(os.path.join(run_dir, name))]
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            words = shlex.split(json.load(f)["command"])
        if "--out" in words:
            del words[words.index("--out"):words.index("--out") + 2]
        again = ": " + " ".join(shlex.quote(w) for w in words + ["--out", "NEW_FOLDER"])
    except (OSError, ValueError, KeyError, TypeError):
        again = " (its command is in config.json)"
    return ("no older checkpoint remains to resume from (train_nn.py keeps only the last); "
            "start the run again in another folder%s%s" % (again, (
                "; %s can still be evaluated with test_model.py --weights"
                % " and ".join(kept)) if kept else ""))


def read_npy(path):
    """Load one array from a ``.npy`` file without unpickling anything."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError("%s: no such file" % path)
    except (ValueError, OSError, EOFError) as error:
        raise UserError("%s: not a readable .npy array (%s)" % (path, error))


# =============================================================================
# Weights files

WEIGHTS_FORMAT = "preresnet-weights-1"
# Checkpoints written before weights and checkpoints shared one format.
_OLD_CHECKPOINT_FORMAT = "preresnet-checkpoint-1"


def write_weights(path, network, names, values, stats, groups=None, records=None):
    """Write a weights file (an uncompressed ``.npz``, atomically).

    A weights file holds the parameters in the network's order (``param_000``
    ...), their names with shapes (enough to diagnose a mismatch), the
    network's identity (``network``, JSON) and the input normalisation the
    parameters were trained with. A checkpoint is a weights file with more:
    ``groups`` of arrays (``{"optimizer": [...]}`` -> ``optimizer_000`` ...)
    and JSON ``records`` (``{"progress": {...}}``); ``read_weights`` returns
    both.
    """
    arrays = {"format": np.array(WEIGHTS_FORMAT),
              "network": np.array(json.dumps(network, sort_keys=True)),
              "param_names": np.array(names),
              "norm_kind": np.array(stats["kind"]),
              "norm_mean": stats["mean"], "norm_std": stats["std"]}
    for group, group_values in dict(groups or {}, param=values).items():
        for i, value in enumerate(group_values):
            arrays["%s_%03d" % (group, i)] = value
    for key, obj in (records or {}).items():
        if key in arrays:
            raise ValueError("record %r would overwrite an array of the format" % key)
        arrays[key] = np.array(json.dumps(obj, sort_keys=True))
    atomic_write(path, lambda f: savez(f, arrays))


def read_weights(path, what="weights", advice="copy it again from where it came"):
    """Read a weights file or checkpoint written by ``write_weights``
    (``advice``: what to do when it is damaged, see ``read_npz``).

    Returns
    -------
    dict
        ``network`` (dict), ``names``, ``values`` (lists), ``stats``,
        ``groups`` (every other numbered group: name -> list of arrays) and
        ``records`` (every other JSON entry: name -> object).
    """
    arrays = read_npz(path, what, advice)
    tag = str(arrays.get("format", ""))
    if tag not in (WEIGHTS_FORMAT, _OLD_CHECKPOINT_FORMAT):
        raise UserError("%s: not a %s file of this project (no '%s' format tag)"
                        % (path, what, WEIGHTS_FORMAT))
    fixed = {"format", "network", "param_names", "norm_kind", "norm_mean", "norm_std"}
    groups, records = {}, {}
    for key in arrays:
        prefix, _, number = key.rpartition("_")
        if prefix and len(number) == 3 and number.isdigit():
            groups.setdefault(prefix, {})[int(number)] = arrays[key]
        elif key not in fixed:
            records[key] = json.loads(str(arrays[key]))
    for prefix, numbered in list(groups.items()):
        if sorted(numbered) != list(range(len(numbered))):
            raise UserError("%s: incomplete, %s arrays %s are not numbered 0..%d"
                            % (path, prefix, sorted(numbered), len(numbered) - 1))
        groups[prefix] = [numbered[i] for i in range(len(numbered))]
    names = [str(n) for n in arrays["param_names"]]
    values = groups.pop("param", [])
    if len(values) != len(names):
        raise UserError("%s: incomplete, %d parameter arrays for %d names"
                        % (path, len(values), len(names)))
    network = (json.loads(str(arrays["network"])) if "network" in arrays
               else records.get("config", {}).get("network", {}))
    return {"network": network, "names": names, "values": values,
            "stats": {"kind": str(arrays["norm_kind"]), "mean": arrays["norm_mean"],
                      "std": arrays["norm_std"]},
            "groups": groups, "records": records}


def check_parameters(expected, found_shapes, path, found_network, expected_network):
    """Compare the network's ``(name, shape)`` list with the shapes a file
    holds, in order; raise UserError naming the first mismatch."""
    where = "%s (made for %s) does not fit %s" % (path, found_network, expected_network)
    for i, ((name, shape), found) in enumerate(zip(expected, found_shapes)):
        if tuple(shape) != tuple(found):
            raise UserError("%s: parameter %d '%s' should have shape %s, the file has %s"
                            % (where, i, name, tuple(shape), tuple(found)))
    if len(expected) > len(found_shapes):
        raise UserError("%s: the file ends after %d parameter arrays; the network's next "
                        "is '%s' (of %d)" % (where, len(found_shapes),
                                             expected[len(found_shapes)][0], len(expected)))
    if len(expected) < len(found_shapes):
        raise UserError("%s: the file has %d parameter arrays, the network only %d"
                        % (where, len(found_shapes), len(expected)))


def read_old_pklz(path):
    """The old repository's published weights: a gzip'd Python 2 pickle of a
    list of float32 arrays (every parameter, in get_all_params order).

    Read through the restricted unpickler: a file that would run code is
    refused before anything runs.
    """
    import gzip
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError("%s: no such weights file" % path)
    except EOFError:
        raise DamagedFile("%s is truncated (its end is missing): copy it again from where "
                          "it came" % path)
    except zlib.error as error:
        raise DamagedFile("%s is damaged (%s): copy it again from where it came"
                          % (path, error))
    except OSError as error:  # gzip.BadGzipFile: not gzip at all, or a bad CRC
        raise UserError("%s: not a readable gzip file (%s)" % (path, error))
    values = safe_unpickle(raw, path)
    if not isinstance(values, list) or not all(isinstance(v, np.ndarray) for v in values):
        raise UserError("%s: expected a list of numpy arrays (the old repository's "
                        "format), found %s" % (path, type(values).__name__))
    return values


# =============================================================================
# Run records


def write_history_csv(path, history, columns):
    """The per-epoch log, rewritten whole (atomically) after every epoch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))


def percent(count, total):
    """``count`` of ``total`` in per cent, with the decimals that tell every
    possible count apart and no more (counts are ``100 / total`` per cent
    apart: 10,000 images give 2 decimals, 50,000 give 3, 200 give 1, 100
    none): 79.18, not 79.17999999999999."""
    decimals = max(0, math.ceil(math.log10(total)) - 2)
    return round(100.0 * count / total, decimals)


def significant(value, digits):
    """``value`` rounded to ``digits`` significant digits (a float32 result
    holds about 7): 1.955220, not 1.9552198946475983."""
    return float("%.*g" % (digits, value))


def curves_figure(history, title, paper_error=None, lr_drops=()):
    """The figure of ``plot_curves`` (a matplotlib Figure; close it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    last = epochs[-1] if epochs else 1
    few = len(epochs) < 20  # a mark on every epoch: one epoch is a point, not nothing
    marker = dict(marker="o", markersize=4) if few else {}
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], label="train loss",
                 **marker)
    ax_loss.set_ylabel("cross-entropy")
    values = []
    for key, label in (("train_error", "train"), ("val_error", "validation"),
                       ("test_error", "test")):
        rows = [row for row in history if row.get(key) is not None]
        if not rows:
            continue
        # 0 % has no place on a log axis: the line breaks there (never joins
        # the epochs around it) and the legend counts such epochs
        zeros = sum(row[key] <= 0 for row in rows)
        ax_err.plot([row["epoch"] for row in rows],
                    [row[key] if row[key] > 0 else float("nan") for row in rows],
                    label=label + (" (0 %% in %d epoch%s, not drawn)" % (
                        zeros, "s" if zeros > 1 else "") if zeros else ""),
                    **(marker or (dict(marker=".", markersize=3) if zeros else {})))
        values += [row[key] for row in rows if row[key] > 0]
    if paper_error is not None:
        ax_err.axhline(paper_error, color="k", linestyle="--",
                       label="paper test error %.2f %%" % paper_error)
        values.append(paper_error)
    ax_err.set_yscale("log")
    if values:
        _error_axis(ax_err.yaxis, min(values) / 1.15, max(values) * 1.15)
    ax_err.set_ylabel("error (%, log scale)")
    drops = [drop for drop in lr_drops if drop <= last]
    for ax in (ax_loss, ax_err):
        ax.set_xlabel("epoch")
        if few:
            ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        for i, drop in enumerate(drops):
            ax.axvline(drop, color="grey", linewidth=0.8, linestyle=":",
                       label="learning-rate drop" if i == 0 else "_nolegend_")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _error_axis(axis, low, high):
    """Ticks of a log error axis from ``low`` to ``high`` per cent, every one
    labelled in plain numbers, at least three: evenly spaced on a narrow range
    (a short run's 60-75 %), every 1-9 of a decade up to a decade (30, 40 ...
    80), 1-2-3-5 up to two decades, 1-2-5 beyond (0.1 ... 50 for a full run)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, \
        NullLocator
    axis.axes.set_ylim(low, high)
    if high / low < 3:
        axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
        axis.set_minor_locator(NullLocator())
    else:
        subs = (tuple(range(1, 10)) if high / low < 10 else
                (1.0, 2.0, 3.0, 5.0) if high / low < 100 else (1.0, 2.0, 5.0))
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    axis.set_major_formatter(FuncFormatter(lambda value, _: "%g" % value))
    axis.set_minor_formatter(NullFormatter())


def plot_curves(path, history, title, paper_error=None, lr_drops=()):
    """Write ``path`` (a PNG): the training loss, and the train, validation and
    test error per epoch on a log scale (the last few per cent of a full run
    stay readable), the paper's test error as a horizontal line when there is
    one, and the learning-rate drops (1-based epochs) reached so far as dotted
    vertical lines. ``title`` is also the PNG's Title entry."""
    import matplotlib.pyplot as plt
    fig = curves_figure(history, title, paper_error, lr_drops)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Title": title})
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
