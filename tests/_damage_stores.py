"""Open copies of a store with random bytes overwritten; print one line per copy (used by test_store.py).

    python tests/_damage_stores.py STORE WORKDIR SEED FIRST COUNT

Each line is ``<trial> read``, ``<trial> refused`` or ``<trial> traceback <exception type>``. A copy
on which HDF5 never returns prints nothing: the caller times out and starts again after it.
"""

import sys
from pathlib import Path

import numpy as np

from phasefeat.io.store import StoreError, open_store


def main(store, work, seed, first, count):
    raw = Path(store).read_bytes()
    rng = np.random.default_rng(seed)
    for trial in range(first + count):
        at = int(rng.integers(0, len(raw) - 4))
        value = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        if trial < first:  # draw the same damage as a run from trial 0 would
            continue
        data = bytearray(raw)
        data[at:at + 4] = value
        copy = Path(work) / f"damaged-{trial}.h5"
        copy.write_bytes(bytes(data))
        try:
            open_store(copy).close()
            outcome = "read"
        except StoreError:
            outcome = "refused"
        except Exception as exc:  # what the test is looking for: a damaged file that escapes as a traceback
            outcome = f"traceback {type(exc).__name__}"
        copy.unlink()
        print(trial, outcome, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
