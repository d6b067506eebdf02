"""``python -m trainer``: the same CLI as the ``trainer`` console script."""

from phasefeat._entry import trainer

trainer()
