"""trainer: streams a phasefeat HDF5 store into Keras loss-comparison experiments.

Not built yet; see the project's issues. Kept importable so the distribution
installs both packages from the start.
"""

__all__: list[str] = []
