"""Streaming a phasefeat store into Keras, one batch at a time.

The store is never loaded whole: each batch reads its samples index by index
(h5py fancy indexing is ~40x slower) from a handle that every process opens for
itself. Shuffling happens here, with a generator seeded by (seed, epoch), so
``fit(shuffle=False)`` and the batch order is the same for every arm.

Batches carry the stored values (uint8 stays uint8): scaling and per-channel
standardisation are the model's first layers (see :func:`trainer.model.vgg16_classifier`),
so they run on the accelerator and the reader never writes 4-byte floats.
Converting a 32-image 299x299x3 batch to standardised float32 in NumPy took
14 ms here against 2 ms for reading it.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

__all__ = ["StoreBatches", "channel_stats", "INPUTS", "scale", "value_range", "OccludedFeatures",
           "read_inputs"]

INPUTS = ("cxr", "enh")


def scale(batch: np.ndarray) -> np.ndarray:
    """Stored values to float32 in [0, 1] (uint8 / 255, uint16 / 65535, floats as they are)."""
    if batch.dtype == np.uint8:
        return batch.astype(np.float32) / 255
    if batch.dtype == np.uint16:
        return batch.astype(np.float32) / 65535
    return batch.astype(np.float32)


def value_range(dtype) -> float:
    """The stored value that means 1.0: 255 for uint8, 65535 for uint16, 1 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def _resize(batch: np.ndarray, size: int) -> np.ndarray:
    if batch.shape[1:3] == (size, size):
        return batch
    import keras

    return np.asarray(keras.ops.convert_to_numpy(
        keras.ops.image.resize(batch, (size, size), interpolation="bilinear", antialias=True)),
        dtype=np.float32)


class OccludedFeatures:
    """ENH recomputed from the radiograph after its occlusion, instead of the stored ENH.

    The stored maps cannot simply be masked: per-image min-max scaling and filters up to
    75 px wide carry the content of the central box into the border pixels, so a model
    shown only the border of stored ENH still sees the lungs. Blacking out the radiograph
    first and computing ENH from it (at the stored size, with the store's parameters)
    leaves nothing of the box to see.
    """

    def __init__(self, mode: str, fraction: float, params_json: str, enh_dtype):
        self.mode, self.fraction = mode, float(fraction)
        self.params_json, self.enh_dtype = params_json, np.dtype(enh_dtype)

    def __call__(self, cxr: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """ENH of the occluded radiographs; ``keep`` (``(n, H, W, 1)`` of 0/1) for lung-mask modes."""
        from phasefeat import PhaseParams, enhance

        from .model import MASK_OCCLUSIONS, occlusion_mask

        if self.mode in MASK_OCCLUSIONS:
            if keep is None:
                raise ValueError(f"occlusion {self.mode!r} needs the images' lung masks")
        else:
            keep = occlusion_mask(cxr.shape[1], cxr.shape[2], self.mode, self.fraction)[None]
        grey = scale(cxr)[..., 0] * keep[..., 0]
        enh = enhance(grey, PhaseParams.from_json(self.params_json), backend="numpy", out="uint8") * keep
        if self.enh_dtype == np.uint8:
            return enh.astype(np.uint8)
        return (enh.astype(np.float32) / 255).astype(self.enh_dtype)


def read_inputs(store, indices, what: str, derive: OccludedFeatures | None = None,
                lung_mode: str | None = None) -> np.ndarray:
    """The model inputs of ``indices`` (stored values): ``what`` as stored, or ENH derived by ``derive``.

    ``lung_mode`` ``"lungs"`` blacks out each image's lung mask, ``"non-lungs"`` all but it.
    """
    keep = None
    if lung_mode is not None:
        # The format's masks are 0/1; a store written elsewhere with 0/255 masks means the same.
        lungs = store.read_many(indices, "mask") != 0
        keep = (lungs if lung_mode == "non-lungs" else ~lungs).astype(np.uint8)
    if derive is not None:
        return derive(store.read_many(indices, "cxr"), keep)
    x = store.read_many(indices, what)
    return x if keep is None else x * keep.astype(x.dtype)


def channel_stats(store_path, indices, what: str, batch_size: int = 64, image_size=None, mask=None,
                  derive: OccludedFeatures | None = None, lung_mode: str | None = None):
    """Per-channel mean and std of the scaled images of ``indices`` (the training split).

    Streams in batches; returns two float32 arrays of shape (C,). ``mask`` (``(H, W, 1)``
    of 0/1 at the model's input size) is applied first, as the model's occlusion layer does.
    """
    from phasefeat.io.store import open_store

    total = total_sq = None
    count = 0
    with open_store(store_path) as store:
        for start in range(0, len(indices), batch_size):
            part = np.sort(np.asarray(indices[start:start + batch_size]))
            x = scale(read_inputs(store, part, what, derive, lung_mode))
            if image_size:
                x = _resize(x, image_size)
            if mask is not None:
                x = x * mask
            x = x.astype(np.float64)
            s, sq = x.sum(axis=(0, 1, 2)), (x * x).sum(axis=(0, 1, 2))
            total = s if total is None else total + s
            total_sq = sq if total_sq is None else total_sq + sq
            count += x.shape[0] * x.shape[1] * x.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _base():
    import keras

    return keras.utils.PyDataset


class StoreBatches(_base()):
    """A ``keras.utils.PyDataset`` of ``(images, labels)`` batches from a store.

    Parameters
    ----------
    store_path : path-like
    indices : array of int
        The samples of this split.
    what : {"cxr", "enh"}
    labels : array of int
        Labels of *all* store samples (indexed by ``indices``).
    n_classes : int
    label_mode : {"onehot", "int"}
    batch_size : int
    shuffle : bool
        Reshuffle every epoch with ``default_rng((seed, epoch))``.
    seed : int
    image_size : int, optional
        Resize on the fly (antialiased bilinear) to ``image_size`` squared.
    augment : bool
        Random horizontal flips and small shifts (training only).
    derive : OccludedFeatures, optional
        Compute ENH from the occluded radiograph instead of reading it.
    lung_mode : {"lungs", "non-lungs"}, optional
        Black out each image's lung mask (or all but it).
    rescale : float, optional
        Multiply the stored values by this factor (float32): puts a store of another dtype on
        the scale a saved model was trained on (:func:`trainer.saved.model_inputs`).
    **kwargs
        ``workers``, ``use_multiprocessing``, ``max_queue_size`` for Keras.
    """

    def __init__(self, store_path, indices, what, labels, n_classes, label_mode, batch_size,
                 *, shuffle=False, seed=0, image_size=None, augment=False, derive=None, lung_mode=None,
                 rescale=None, **kwargs):
        super().__init__(**kwargs)
        if what not in INPUTS:
            raise ValueError(f"input must be one of {list(INPUTS)}, got {what!r}")
        self.store_path = str(store_path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.what, self.n_classes, self.label_mode = what, n_classes, label_mode
        self.labels = np.asarray(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.image_size, self.augment, self.derive = image_size, augment, derive
        self.lung_mode, self.rescale = lung_mode, rescale
        self.epoch = 0
        self._order = self._make_order()
        self._store = None
        self._pid = None
        self._lock = threading.Lock()

    def _make_order(self):
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng((self.seed, self.epoch))
        return self.indices[rng.permutation(len(self.indices))]

    def _handle(self):
        # h5py handles must not cross a fork: (re)open in whichever process reads.
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                from phasefeat.io.store import open_store

                self._store, self._pid = open_store(self.store_path), os.getpid()
            return self._store

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, i):
        chosen = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        # Read in file order (contiguous runs are faster); batch membership is what matters.
        chosen = np.sort(chosen)
        x = read_inputs(self._handle(), chosen, self.what, self.derive, self.lung_mode)
        if self.image_size and x.shape[1:3] != (self.image_size, self.image_size):
            x = _resize(x.astype(np.float32), self.image_size)  # stays on the stored scale
        if self.rescale is not None:  # a model trained on another dtype's scale (trainer evaluate)
            x = x.astype(np.float32) * np.float32(self.rescale)
        if self.augment:
            x = self._augment(x, i)
        y = self.labels[chosen]
        if self.label_mode == "onehot":
            y = np.eye(self.n_classes, dtype=np.float32)[y]
        else:
            y = y.astype(np.int32)
        return x, y

    def _augment(self, x, i):
        rng = np.random.default_rng((self.seed, self.epoch, i, 7))
        flip = rng.random(len(x)) < 0.5
        x = x.copy()
        x[flip] = x[flip, :, ::-1]
        shifts = rng.integers(-4, 5, size=(len(x), 2))
        for k, (dy, dx) in enumerate(shifts):
            x[k] = np.roll(x[k], (int(dy), int(dx)), axis=(0, 1))
        return x

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch``'s order next (a run resumed from a checkpoint starts there)."""
        self.epoch = epoch
        self._order = self._make_order()

    def close(self):
        if self._store is not None:
            self._store.close()
            self._store = None
