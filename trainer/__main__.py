"""``python -m trainer``: the same CLI as the ``trainer`` console script."""

from .cli import main

main()
