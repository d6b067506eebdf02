"""``python -m phasefeat``: the same CLI as the ``phasefeat`` console script."""

from .cli import main

main()
