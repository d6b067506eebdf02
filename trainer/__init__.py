"""trainer: streams a phasefeat HDF5 store into Keras loss-comparison experiments.

Stages: splits -> data (a streaming PyDataset) -> model / backbones -> losses ->
experiment -> metrics -> report -> audit and explain; the command line is
:mod:`trainer.cli` (``trainer --help``).
"""

__all__: list[str] = []
