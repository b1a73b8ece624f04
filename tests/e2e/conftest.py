"""Real-browser tests: one Streamlit server and one chromium for the whole session.

Every test in this folder is marked ``e2e`` and put in the xdist group ``e2e`` (``pytest -n 2 --dist loadgroup``
runs them all on one worker, so the server starts once). When no chromium can be found or launched, every e2e
test is skipped with a loud reason, a warning and a banner; set ``KAP_E2E_REQUIRE_BROWSER=1`` (CI with a
browser) to make that a failure instead.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import (
    ARTIFACTS,
    StreamlitServer,
    find_chromium,
    launch_browser,
    new_page,
    open_app,
    sample_exports,
)

HERE = Path(__file__).resolve().parent
REQUIRE_BROWSER = os.environ.get("KAP_E2E_REQUIRE_BROWSER", "") not in ("", "0", "false", "no")
_NO_BROWSER = pytest.StashKey[str]()
_CALL_FAILED = pytest.StashKey[bool]()
_BANNER = "!" * 100


class E2EBrowserMissing(pytest.PytestWarning):
    """No usable chromium: the real-browser tests did not run."""


def _banner(config: pytest.Config, reason: str) -> None:
    config.stash[_NO_BROWSER] = reason
    if not hasattr(config, "workerinput"):  # a worker's warning reaches the controller by class name, and two
        # conftest modules of that name exist, so xdist could not rebuild it (INTERNALERROR): the banner says it there
        warnings.warn(E2EBrowserMissing(f"REAL-BROWSER (e2e) TESTS SKIPPED: {reason}"), stacklevel=1)
    line = f"\n{_BANNER}\n!!! REAL-BROWSER (e2e) TESTS SKIPPED: {reason}\n{_BANNER}\n"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if hasattr(config, "workerinput"):  # an xdist worker: its stderr is the terminal's once capture is off
        capture = config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                sys.stderr.write(line)
                sys.stderr.flush()
    elif reporter is not None:
        reporter.write_line(line, red=True, bold=True)


def _in_here(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if _in_here(item)]
    for item in mine:
        if item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group("e2e"))
        _put_in_xdist_group(config, item)
    if not mine or REQUIRE_BROWSER:
        return
    reason = None
    if find_chromium() is None:
        reason = ("no chromium found (/usr/bin/chromium or `chromium` on PATH); install Debian's chromium "
                  "(`make browser`, as root) to run them")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as err:
            reason = f"the playwright package is not importable ({err}); run `uv sync --frozen --extra dev`"
    if reason:
        _banner(config, reason)
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=f"REAL-BROWSER TEST NOT RUN: {reason}"))


def _put_in_xdist_group(config: pytest.Config, item: pytest.Item) -> None:
    """Give the item the ``@e2e`` node-id suffix by which ``--dist loadgroup`` groups tests.

    pytest-xdist 3.8 writes that suffix to ``item._nodeid``, which pytest ≥ 9.2 no longer reads (node ids are
    structured), so the group is silently lost and each worker would start its own server and browser
    (pytest-dev/pytest-xdist#1386). Until xdist is fixed, set the structured id here; with older pytest
    (``_nodeid`` still used) xdist does it itself and this does nothing.
    """
    if not getattr(config.option, "loadgroup", False) or "@" in item.nodeid or not hasattr(item, "_id"):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:
        return
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})
    item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reason = config.stash.get(_NO_BROWSER, None)
    if reason:
        terminalreporter.write_line(f"{_BANNER}\n!!! REAL-BROWSER (e2e) TESTS WERE SKIPPED: {reason}\n{_BANNER}",
                                    red=True, bold=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


# ----------------------------------------------------------------------------------------------- fixtures

@dataclass(frozen=True)
class App:
    """The running dashboard: its URL, the server (log, uncaught errors) and the browser."""

    url: str
    server: StreamlitServer
    browser: Any


@pytest.fixture(scope="session")
def browser(pytestconfig: pytest.Config) -> Iterator[Any]:
    """Debian's chromium driven by Playwright (no browser download)."""
    executable = find_chromium()
    if executable is None:
        _fail_or_skip(pytestconfig, "no chromium found (/usr/bin/chromium or `chromium` on PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        _fail_or_skip(pytestconfig, f"the playwright package is not importable ({err})")
    playwright = sync_playwright().start()
    try:
        try:
            chromium = launch_browser(playwright, executable)
        except Exception as err:  # noqa: BLE001 - any launch failure means: no browser here
            message = " ".join(str(err).split())
            if len(message) > 500:
                message = message[:150] + " … " + message[-350:]
            _fail_or_skip(pytestconfig, f"Playwright could not launch {executable}: {message}")
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


def _fail_or_skip(config: pytest.Config, reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"KAP_E2E_REQUIRE_BROWSER is set but {reason}", pytrace=False)
    if config.stash.get(_NO_BROWSER, None) is None:
        _banner(config, reason)
    pytest.skip(f"REAL-BROWSER TEST NOT RUN: {reason}")


@pytest.fixture(scope="session")
def app(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """``streamlit run dashboard.py`` on a free port of 127.0.0.1 in local mode (no sign-in), warmed up; always
    stopped at the end. The sign-in tests start their own server (test_e2e_login.py)."""
    tmp = tmp_path_factory.mktemp("e2e-server")
    (tmp / "data").mkdir()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("FAILED-*.png"):  # only this run's failures
        old.unlink()
    no_auth = tmp / "secrets.toml"  # local mode, whatever ~/.streamlit/secrets.toml of this machine configures
    no_auth.write_text("# no [auth] section: the app runs in local mode\n", encoding="utf-8")
    server = StreamlitServer(data_dir=tmp / "data", log_path=ARTIFACTS / "streamlit-server.log", secrets_file=no_auth)
    atexit.register(server.stop)  # belt and braces: a hard interrupt still stops the server
    try:
        server.start()
        warm = new_page(browser)  # the first render after start imports the whole stack: do it once here
        try:
            open_app(warm, server.url)
        finally:
            warm.context.close()
        yield App(url=server.url, server=server, browser=browser)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def upload_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample exports to upload (``sample_data/``, or a generated clinic when it is absent)."""
    return sample_exports(tmp_path_factory.mktemp("e2e-sample"))


@pytest.fixture()
def errors_before(app: App) -> int:
    """How many uncaught exceptions the server had logged before this test (see ``uncaught_errors(since=)``)."""
    return len(app.server.uncaught_errors())


@pytest.fixture()
def browser_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page on no server in particular; a screenshot is kept when the test fails."""
    pg = new_page(browser)
    try:
        yield pg
    finally:
        if request.node.stash.get(_CALL_FAILED, False):
            _keep_failure_screenshot(pg, request.node.name)
        pg.context.close()


@pytest.fixture()
def blank_page(app: App, errors_before: int, browser_page: Any) -> Any:
    """A fresh browser session (not yet on the dashboard); a screenshot is kept when the test fails."""
    return browser_page


@pytest.fixture()
def page(app: App, blank_page: Any) -> Any:
    """A fresh browser session on the dashboard's landing page (the bundled sample clinic)."""
    open_app(blank_page, app.url)
    return blank_page


def _keep_failure_screenshot(pg: Any, name: str) -> None:
    with contextlib.suppress(Exception):  # a failed screenshot must not hide the test's own failure
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{name}.png"), full_page=True)
