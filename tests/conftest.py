"""Every test gets its own data folder: nothing is written to the user's real store."""

import pytest


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KAP_OUTCOMES_DATA_DIR", str(tmp_path / "kap-data"))
