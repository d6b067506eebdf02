"""Golden values: ENH numbers per preset that a change must explain (tests/golden_values.py)."""

import json

import numpy as np
import pytest
from conftest import REAL_DIR
from golden_values import GOLDEN, PRESETS, inputs, values

EXPECTED = json.loads(GOLDEN.read_text())
INPUTS = inputs(REAL_DIR)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", list(EXPECTED))
def test_enh_equals_its_golden_values(name, preset):
    if name not in INPUTS:
        pytest.skip(f"{name} not found at {REAL_DIR}")
    got, want = values(INPUTS[name], preset), EXPECTED[name][preset]
    assert got["channel_order"] == want["channel_order"]
    message = ("ENH numbers changed: if intended, run  python tests/golden_values.py --write  and say why "
               "in CHANGELOG.md")
    assert np.allclose(got["channel_means"], want["channel_means"], rtol=0, atol=1e-7), message
    assert np.allclose(got["pixels"], want["pixels"], rtol=0, atol=1e-7), message
