"""Dask worker preload for tests: this worker cannot open the store named by ``HIDDEN_STORE``.

Stands in for a worker on a machine where the store is not at the driver's path (no
shared file system): ``open_store`` answers as it does for a missing file.
"""

import os


def dask_setup(worker):
    import phasefeat.io.store as store

    hidden = os.path.realpath(os.environ["HIDDEN_STORE"])
    real = store.open_store

    def open_store(path, *args, **kwargs):
        if os.path.realpath(path) == hidden:
            raise store.StoreError(f"{path}: no such file")
        return real(path, *args, **kwargs)

    store.open_store = open_store
