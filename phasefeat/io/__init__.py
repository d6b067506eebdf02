"""Radiographs in, one store out, and the store read back.

imageio (decoding, fitting and resizing) -> discover (layouts, labels, sources,
everything that cannot be read as a failure) -> pieces (one resumable unit of
work) -> convert (local processes) or distributed (Dask) -> store (the HDF5
writer and the reader, :func:`phasefeat.io.store.open_store`, that checks every
store's invariants); inspect_store summarises a store; _atomic makes writes land
whole.
"""
