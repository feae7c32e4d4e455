"""Window tables' helpers: the log merge's grouping of rows."""

from __future__ import annotations

import numpy as np
import pytest

from streams._tables import _unique_rows


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("count", [0, 1, 7, 5_000])
@pytest.mark.parametrize("packs", [True, False])
def test_unique_rows_is_numpys_unique_along_the_rows(width: int, count: int, packs: bool) -> None:
    """The same first occurrences and groups, in the same order, as ``np.unique(axis=0)``,
    whether the columns pack into one int64 code or not (a fraction, a huge value)."""
    rng = np.random.default_rng(count + width)
    keys = rng.integers(-3, 9, (count, width)).astype(np.float64)
    if not packs and count:
        keys[0, 1] = 2.0**61
        keys[-1, 0] = 0.5
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    got_first, got_inverse = _unique_rows(keys)
    assert got_first.tolist() == first.tolist()
    assert got_inverse.tolist() == inverse.reshape(-1).tolist()
