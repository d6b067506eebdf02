"""A store as a map-style dataset for ``torch.utils.data.DataLoader`` (torch not needed to import).

Each worker process opens its own HDF5 handle on first use (handles must not cross a fork)
and reads sample by sample, which h5py does far faster than fancy indexing. Samples come out
channels-first, as PyTorch expects, with the stored values (uint8 stays uint8); the
DataLoader's default collation turns them into tensors.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["StoreDataset"]


class StoreDataset:
    """``dataset[i] -> (image (C, H, W), label)`` over a phasefeat store.

    Parameters
    ----------
    path : path-like
        A store made by ``phasefeat convert``.
    what : {"enh", "cxr"}
    indices : sequence of int, optional
        The samples of this dataset (e.g. one part of a split); all of them by default.
    transform : callable, optional
        Applied to each ``(C, H, W)`` image (e.g. a torchvision or MONAI transform).

    Examples
    --------
    >>> loader = DataLoader(StoreDataset("enh.h5"), batch_size=32, num_workers=2)   # doctest: +SKIP
    """

    def __init__(self, path, what: str = "enh", indices=None, transform=None):
        from ..io.store import open_store

        if what not in ("enh", "cxr"):
            raise ValueError(f"what must be 'enh' or 'cxr', got {what!r}")
        with open_store(path) as store:  # fails here, in the main process, if it is not a store
            self.labels = store.labels.copy()
            self.class_names = store.class_names
        self.path, self.what, self.transform = os.fspath(path), what, transform
        self.indices = np.arange(len(self.labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self._store, self._pid = None, None

    def __len__(self) -> int:
        return len(self.indices)

    def _handle(self):
        if self._store is None or self._pid != os.getpid():
            from ..io.store import open_store

            self._store, self._pid = open_store(self.path), os.getpid()
        return self._store

    def __getitem__(self, k: int):
        i = int(self.indices[k])
        image = np.ascontiguousarray(self._handle().read(i, self.what).transpose(2, 0, 1))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def __getstate__(self):  # a worker gets the settings, never an open handle
        state = dict(self.__dict__)
        state["_store"] = state["_pid"] = None
        return state
