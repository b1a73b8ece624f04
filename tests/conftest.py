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


@pytest.fixture(autouse=True)
def _no_background_warmup(monkeypatch):
    """App tests run without the background warm-up.

    After each script run the app computes every page's first view in a background thread for a newly built cohort
    (analytics.outcomes.warmup; about 4 s of CPU on the sample clinic). An app test opens one or two pages of a new
    session, so the warm-up only competed with the other test worker. The pages compute what they show themselves,
    as they do for a page opened before the warm-up reaches it. The warm-up itself is tested in test_warmup.py
    (which calls it directly) and runs in the real-browser tests, whose server is a separate process.
    """
    import pages._shared as shared

    monkeypatch.setattr(shared, "start_pending_warmup", _drop_pending_warmup)


def _drop_pending_warmup() -> None:
    """``start_pending_warmup`` in app tests: the pending cohort is forgotten, no warm-up starts."""
    import pages._shared as shared

    shared.st.session_state.pop(shared.Key.WARMUP, None)


@pytest.fixture(scope="module")
def module_app_env(tmp_path_factory):
    """For an app session that a module's tests share (made before each test's own fixtures): a private data folder
    and no background warm-up, as every test gets from the fixtures above."""
    import pages._shared as shared

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAP_OUTCOMES_DATA_DIR", str(tmp_path_factory.mktemp("kap-data")))
        mp.setattr(shared, "start_pending_warmup", _drop_pending_warmup)
        yield


def _scan_manifests_once() -> None:
    """Streamlit's AppTest looks for custom components in every installed package's metadata for each new app
    (0.6 s each time); the installed packages do not change during a test run."""
    import functools

    from streamlit.components.v2 import manifest_scanner

    cached = functools.cache(manifest_scanner.scan_component_manifests)

    def once(*args, **kwargs):  # a new list each time, as the original returns
        return list(cached(*args, **kwargs))

    manifest_scanner.scan_component_manifests = once


_scan_manifests_once()
