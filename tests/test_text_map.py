"""``schemas.arrow.text_map`` is ``Series.map`` (values and dtype), looked up by Arrow's hash kernel."""

import numpy as np
import pandas as pd
import pytest

from schemas.arrow import text_map

RNG = np.random.default_rng(5)
KEYS = pd.Index([f"P{i:05d}" for i in range(300)], dtype="str")
IDS = pd.Series(RNG.choice(np.asarray(KEYS), 2_000), dtype="str", name="patient_id")
IDS.iloc[::37] = None  # missing ids map to missing
IDS.iloc[5] = "not-a-patient"  # an id without a value maps to missing


@pytest.mark.parametrize("values", [
    RNG.normal(size=300),
    RNG.integers(0, 5, 300),  # int: missing promotes to float
    RNG.integers(0, 2, 300).astype(bool),  # bool: missing promotes to object
    pd.array(RNG.choice(["a", "b"], 300), dtype="str"),
    pd.array(RNG.choice(["a", "b"], 300), dtype="string"),
    pd.Categorical(RNG.choice(["x", "y"], 300)),
    pd.array(RNG.integers(0, 5, 300), dtype="Int64"),
    pd.to_datetime("2025-01-01") + pd.to_timedelta(RNG.integers(0, 90, 300), unit="D"),
], ids=["float", "int", "bool", "str", "string", "category", "Int64", "datetime"])
def test_same_as_series_map(values):
    mapper = pd.Series(values, index=KEYS)
    got = text_map(IDS, mapper)
    pd.testing.assert_series_equal(got, IDS.map(mapper))
    assert got.isna().sum() == IDS.isna().sum() + 1  # the unknown id too


def test_other_mappers_are_series_map():
    as_dict = {"P00001": 1.5}
    pd.testing.assert_series_equal(text_map(IDS, as_dict), IDS.map(as_dict))
    repeated = pd.Series([1.0, 2.0], index=pd.Index(["P00001", "P00001"], dtype="str"))
    with pytest.raises(pd.errors.InvalidIndexError):  # pandas refuses a repeated key: so does text_map
        text_map(IDS, repeated)
    numeric = pd.Series([3, 4], index=[10, 11])
    ints = pd.Series([10, 11, 12])
    pd.testing.assert_series_equal(text_map(ints, numeric), ints.map(numeric))
