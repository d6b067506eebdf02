"""``python -m phasefeat``: the same CLI as the ``phasefeat`` console script."""

from ._entry import phasefeat

phasefeat()
