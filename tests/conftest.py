"""Every test gets its own data folder: nothing is written to the user's real store.

Every test also gets back the process-wide Streamlit state that ``AppTest.run`` swaps in for a run: ``st.secrets``
(a test's ``at.secrets``, e.g. an ``[auth]`` section) and the mock ``Runtime``. AppTest puts them back only when
the run returns; a run that raises (a timeout on a busy machine, say) would leave a signed-in test's ``[auth]``
secrets in place, and every later app test in the same worker would then see sign-in configured and fail.
"""

import pytest
import streamlit as st
from streamlit.runtime import Runtime


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KAP_OUTCOMES_DATA_DIR", str(tmp_path / "kap-data"))


@pytest.fixture(autouse=True)
def _streamlit_globals_restored():
    secrets, runtime = st.secrets, Runtime._instance
    yield
    st.secrets, Runtime._instance = secrets, runtime
