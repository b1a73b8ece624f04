"""Served to a network without sign-in: a real ``streamlit run dashboard.py --server.address 0.0.0.0`` with no
``[auth]`` (an empty secrets file) shows every visitor one sentence saying how to configure sign-in, at every
address, and nothing of the app: no navigation, no data, no uploader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_harness import ARTIFACTS, ROOT, free_port, main_text, new_page, open_app

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

REFUSAL = "refuses to serve on 0.0.0.0 without sign-in"
APP_TEXT = ("Outcome definitions", "sample clinic", "Upload the clinic's exports", "Local mode", "Upload history")


@pytest.fixture(scope="module")
def network_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("e2e-network")
    (tmp / "secrets.toml").write_text("", encoding="utf-8")
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py"), "--server.address", "0.0.0.0",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--secrets.files", str(tmp / "secrets.toml")]
    log_path = ARTIFACTS / "streamlit-server-network.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KAP_OUTCOMES_DATA_DIR=str(tmp / "data"), PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def test_without_sign_in_a_network_server_shows_only_how_to_configure_sign_in(browser: Any, network_url: str):
    page = new_page(browser)
    try:
        for path in ("data", "", "history"):  # a deep link first: the routing of a fresh server differs
            open_app(page, network_url + path)
            text = main_text(page)
            assert REFUSAL in text and "[auth]" in text, f"/{path}: no refusal; the page shows:\n{text[:1500]}"
            shown = [t for t in APP_TEXT if t.lower() in text.lower()]
            assert not shown, f"/{path}: a visitor sees {shown}"
            assert page.locator('[data-testid="stSidebarNavLink"], [data-testid="stFileUploader"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "network-refusal.png"))
    finally:
        page.context.close()
    log = (ARTIFACTS / "streamlit-server-network.log").read_text(errors="replace")
    assert REFUSAL in log, "the refusal is not in the server's output, where whoever started it looks"
    assert "Uncaught app execution" not in log, log[-3000:]
