"""The real Streamlit server and a real browser, shared by the e2e tests and ``screenshots.py``.

Plain helpers (no pytest here): find Debian's chromium, start ``streamlit run dashboard.py`` on a free port of
127.0.0.1 and stop it, launch chromium through Playwright without any browser download, wait until Streamlit has
finished running the script, discover the pages from the navigation, and sample exports to upload.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = ROOT / "sample_data"
ARTIFACTS = ROOT / "tests" / "artifacts"
EXPORTS = ("sessions", "followups", "patients")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1400, "height": 1000}
RUN_TIMEOUT_MS = 90_000     # a script run (model fits on the sample clinic included)
ACTION_TIMEOUT_MS = 20_000  # a click, a locator, an upload

# The page has rendered what the server sent: connected, not running, no spinner, no lazy element still loading
# (Suspense skeleton), no element left over from the previous run.
_IDLE_JS = """
() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return false;
  const state = app.getAttribute('data-test-script-state');
  if (state !== 'notRunning' && state !== 'compilationError') return false;
  if (app.getAttribute('data-test-connection-state') !== 'CONNECTED') return false;
  const busy = document.querySelector('[data-testid="stStatusWidgetRunningIcon"], '
      + '[data-testid="stStatusWidgetRunningManIcon"], [data-testid="stSpinner"], [data-testid="stSkeleton"], '
      + '[data-testid="stAppSkeleton"], [data-testid="stElementContainer"][data-stale="true"]');
  return busy === null;
}
"""

# Plotly draws after the element mounts; visible charts are drawn when they hold an svg.
_CHARTS_DRAWN_JS = """
() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
  .filter(el => el.offsetParent !== null)
  .every(el => el.querySelector('.js-plotly-plot .main-svg') !== null)
"""

# A Python traceback or exception name (TypeError, ModuleNotFoundError, "Error: ...") shown as text on the page;
# plain words such as "error bars" or "standard error" do not match.
EXCEPTION_TEXT = re.compile(r"Traceback \(most recent call last\)|^Traceback|\b[A-Z][A-Za-z]*[a-z]Error\b|\bError:",
                            re.MULTILINE)


# ----------------------------------------------------------------------------------------------- the browser

def find_chromium() -> str | None:
    """Path of Debian's chromium (``/usr/bin/chromium`` or ``chromium`` on PATH), or None.

    ``KAP_E2E_CHROMIUM`` names another browser executable (a path that does not exist means: no browser).
    """
    override = os.environ.get("KAP_E2E_CHROMIUM")
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def launch_browser(playwright: Any, executable: str) -> Any:
    """Launch chromium headless from ``executable`` (no Playwright browser download)."""
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


class RunWatcher:
    """Counts Streamlit's script runs from the messages on the page's websocket.

    A run starts with a ``new_session`` message and ends with ``script_finished``. Counting them (rather than
    watching the page's running indicator) cannot mistake the idle state *before* a rerun for its end, and sees
    runs too fast for the indicator to change.
    """

    _DONE = frozenset({0, 1, 3})  # FINISHED_SUCCESSFULLY, _WITH_COMPILE_ERROR, _FRAGMENT_RUN_SUCCESSFULLY

    def __init__(self) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self._message = ForwardMsg
        self.started = 0
        self.finished = 0

    def attach(self, page: Any) -> None:
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, websocket: Any) -> None:
        if "/_stcore/stream" in websocket.url:
            websocket.on("framereceived", self._on_frame)

    def _on_frame(self, payload: bytes | str) -> None:
        if not isinstance(payload, (bytes, bytearray)):
            return
        message = self._message()
        try:
            message.ParseFromString(bytes(payload))
        except Exception:  # noqa: BLE001 - not a ForwardMsg: not ours to count
            return
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self.started += 1
        elif kind == "script_finished" and message.script_finished in self._DONE:
            self.finished += 1


_WATCHERS: weakref.WeakKeyDictionary[Any, RunWatcher] = weakref.WeakKeyDictionary()


def new_page(browser: Any, *, viewport: dict[str, int] | None = None) -> Any:
    """A page in a fresh browser context (a fresh Streamlit session) whose script runs are counted."""
    context = browser.new_context(viewport=viewport or VIEWPORT, color_scheme="light", accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(ACTION_TIMEOUT_MS)
    watcher = RunWatcher()
    watcher.attach(page)
    _WATCHERS[page] = watcher
    return page


def runs_finished(page: Any) -> int:
    """How many script runs have finished on this page so far (pass to :func:`wait_for_run`)."""
    return _WATCHERS[page].finished


def _poll(page: Any, condition: Any, timeout_ms: int) -> bool:
    deadline = time.monotonic() + timeout_ms / 1000
    while not condition():
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(50)  # lets Playwright deliver the websocket events
    return True


def wait_for_run(page: Any, *, after: int = 0, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until a script run has finished after ``after`` finished runs, and the page has rendered it.

    Use ``n = runs_finished(page)`` before a click, then ``wait_for_run(page, after=n)``.
    """
    watcher = _WATCHERS[page]
    if not _poll(page, lambda: watcher.finished > after, timeout_ms):
        raise TimeoutError(f"no script run finished within {timeout_ms / 1000:.0f} s on {page.url}")
    wait_idle(page, timeout_ms=timeout_ms)
    wait_for_charts(page)


def wait_idle(page: Any, *, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the page shows nothing running or loading (without requiring a new script run)."""
    page.wait_for_function(_IDLE_JS, timeout=timeout_ms, polling=100)
    page.wait_for_timeout(150)  # let React paint the last delta
    page.wait_for_function(_IDLE_JS, timeout=timeout_ms, polling=100)


def wait_for_charts(page: Any, *, timeout_ms: int = 15_000) -> bool:
    """Wait (at most ``timeout_ms``) until every visible plotly chart is drawn; False when some never were."""
    try:
        page.wait_for_function(_CHARTS_DRAWN_JS, timeout=timeout_ms, polling=100)
    except Exception:  # noqa: BLE001 - a chart that does not draw is reported by the caller's own checks
        return False
    return True


def wait_for_rerun(page: Any, *, after: int, start_timeout_ms: int = 5_000,
                   timeout_ms: int = RUN_TIMEOUT_MS) -> bool:
    """Like :func:`wait_for_run`, but False (instead of an error) when no run starts within ``start_timeout_ms``.

    For interactions that may or may not rerun the script (e.g. choosing the option already chosen).
    """
    watcher = _WATCHERS[page]
    started = watcher.started
    if not _poll(page, lambda: watcher.finished > after or watcher.started > started, start_timeout_ms):
        return False
    wait_for_run(page, after=after, timeout_ms=timeout_ms)
    return True


def open_app(page: Any, url: str) -> None:
    """Go to ``url`` and wait for the first script run to end."""
    before = runs_finished(page)
    page.goto(url, wait_until="domcontentloaded")
    wait_for_run(page, after=before)


# ----------------------------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StreamlitServer:
    """``streamlit run dashboard.py`` on 127.0.0.1, headless, no usage statistics, its own data folder.

    Use as a context manager; the server is always stopped on exit. Its output goes to ``log_path``.
    ``secrets_file`` makes it read that secrets.toml *instead of* ``.streamlit/secrets.toml`` of the repository and
    of the home folder (Streamlit's ``secrets.files`` option), e.g. one with an ``[auth]`` section for sign-in.
    """

    def __init__(self, *, data_dir: Path, log_path: Path, port: int | None = None,
                 secrets_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.data_dir = data_dir
        self.log_path = log_path
        self.secrets_file = secrets_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 60.0) -> Self:
        env = dict(os.environ, KAP_OUTCOMES_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py"),
               "--server.address", "127.0.0.1", "--server.port", str(self.port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--server.runOnSave", "false",
               "--client.toolbarMode", "minimal", "--global.developmentMode", "false"]
        if self.secrets_file is not None:
            cmd += ["--secrets.files", str(self.secrets_file)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.process.returncode} before answering "
                                   f"/_stcore/health. Its output:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit did not answer {self.url}_stcore/health within {timeout_s:.0f} s. "
                           f"Its output:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server output)"
        return "\n".join(text.splitlines()[-lines:])

    def uncaught_errors(self, *, since: int = 0) -> list[str]:
        """Server-side 'Uncaught app execution' blocks (each with its traceback), after the first ``since``.

        Pass ``since=len(server.uncaught_errors())`` taken at the start of a test to see only its own.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [block.strip()[:3000] for block in text.split("Uncaught app execution")[1:]][since:]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------- the pages

@dataclass(frozen=True)
class NavPage:
    """One entry of the dashboard's navigation."""

    title: str
    href: str

    @property
    def slug(self) -> str:
        """File-name form of the title: 'Time to return to use' -> 'time-to-return-to-use'."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "page"


_NAV_LINKS = '[data-testid="stSidebarNavLink"], [data-testid="stTopNavLink"], [data-testid="stTopNavDropdownLink"]'


# The page title of a navigation link, without its icon (material icons are ligature text such as "dashboard").
_LINK_TITLE_JS = """
el => {
  const label = el.querySelector('span[label]');
  if (label && label.getAttribute('label')) return label.getAttribute('label');
  const copy = el.cloneNode(true);
  copy.querySelectorAll('[data-testid^="stIcon"]').forEach(icon => icon.remove());
  return copy.innerText;
}
"""


def discover_pages(page: Any) -> list[NavPage]:
    """The pages listed in the navigation, in order, as the user sees them.

    Streamlit hides the navigation when the app has a single page; the current (default) page is then the only
    one. Collapsed sidebar sections ("View more") are expanded first.
    """
    more = page.locator('[data-testid="stSidebarNavViewButton"]')
    if more.count() and "more" in more.first.inner_text().lower():
        more.first.click()
        page.wait_for_timeout(200)
    pages: list[NavPage] = []
    for link in page.locator(_NAV_LINKS).all():
        href = link.get_attribute("href") or ""
        title = " ".join(link.evaluate(_LINK_TITLE_JS).split())
        if href and not any(p.href == href for p in pages):
            pages.append(NavPage(title=title, href=href))
    if not pages:
        heading = page.locator('[data-testid="stMain"] h1, [data-testid="stMain"] h2').first
        title = " ".join(heading.inner_text().split()) if heading.count() else "Data"
        pages.append(NavPage(title=title, href=page.url))
    return pages


def go_to(page: Any, nav: NavPage) -> None:
    """Open ``nav`` by clicking its navigation link (same session); nothing to do when it is the current page.

    Loads its URL (a new session) only when the navigation is hidden.
    """
    if urlsplit(page.url).path.rstrip("/") == urlsplit(nav.href).path.rstrip("/"):
        return
    link = page.locator(f'[data-testid="stSidebarNavLink"][href="{nav.href}"], '
                        f'[data-testid="stTopNavLink"][href="{nav.href}"]')
    if link.count():
        before = runs_finished(page)
        link.first.click()
        if not wait_for_rerun(page, after=before):
            raise AssertionError(f"clicking {nav.title!r} in the navigation did not run the page")
    else:
        open_app(page, nav.href)


def main_text(page: Any) -> str:
    return page.locator('[data-testid="stApp"]').inner_text()


def page_problems(page: Any) -> list[str]:
    """What shows that the page broke: exception elements, traceback or exception-name text, no heading."""
    problems: list[str] = []
    exceptions = page.locator('[data-testid="stException"]')
    for i in range(exceptions.count()):
        problems.append("exception element: " + " ".join(exceptions.nth(i).inner_text().split())[:600])
    match = EXCEPTION_TEXT.search(main_text(page))
    if match and not exceptions.count():
        text = main_text(page)
        problems.append(f"exception text {match.group(0)!r} near: "
                        + " ".join(text[max(0, match.start() - 150):match.end() + 150].split()))
    headings = page.locator('[data-testid="stMain"] h1, [data-testid="stMain"] h2, [data-testid="stMain"] h3')
    if headings.count() == 0:
        problems.append("no heading (h1–h3) in the main area")
    dialogs = page.locator('[data-testid="stDialog"]').filter(has_text="Page not found")
    if dialogs.count() and dialogs.first.is_visible():
        problems.append("'Page not found' dialog: " + " ".join(dialogs.first.inner_text().split())[:200])
    if not page.evaluate(_CHARTS_DRAWN_JS):
        problems.append("a plotly chart was not drawn")
    return problems


def screenshot_full(page: Any, path: Path, *, width: int | None = None) -> Path:
    """Screenshot of the whole page, including the part of the main area below the fold.

    Streamlit scrolls inside its main container rather than the document, so the viewport is grown to the
    content's height for the shot and restored afterwards.
    """
    size = page.viewport_size or VIEWPORT
    height = int(page.evaluate("""() => {
        const els = [document.querySelector('[data-testid="stMain"]'),
                     document.querySelector('[data-testid="stSidebarContent"]'),
                     document.querySelector('[data-testid="stAppViewContainer"]'), document.documentElement];
        return Math.max(...els.filter(Boolean).map(e => e.scrollHeight));
    }"""))
    path.parent.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": width or size["width"], "height": max(size["height"], min(height, 12_000))})
    try:
        page.wait_for_timeout(400)  # plotly and dataframes re-layout on resize
        page.screenshot(path=str(path), full_page=True, animations="disabled")
    finally:
        page.set_viewport_size(size)
    return path


def visit_every_page(page: Any, server: Any, shots: Path, *, errors_before: int) -> None:
    """Open every page of the navigation (discovered at run time, so a new page in dashboard.py is covered at once)
    and check each: no exception, a heading, drawn charts, its own URL; a screenshot of each is kept in ``shots``.
    ``server`` is the running StreamlitServer (its log names an uncaught exception)."""
    pages = discover_pages(page)
    assert any(p.title == "Data" for p in pages), [p.title for p in pages]
    problems: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    for nav in pages:
        start = time.perf_counter()
        go_to(page, nav)
        timings[nav.title] = time.perf_counter() - start
        found = page_problems(page)
        if page.url.split("?")[0].rstrip("/") != nav.href.split("?")[0].rstrip("/"):
            found.append(f"the URL is {page.url}, not the page's {nav.href}")
        if found:
            problems[nav.title] = found
        screenshot_full(page, shots / f"{nav.slug}.png")
    print("page render seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    assert not problems, f"pages that broke (screenshots in {shots.relative_to(ARTIFACTS.parent.parent)}):\n" + (
        "\n".join(f"- {title}: " + " | ".join(found) for title, found in problems.items())
        + "\nserver log:\n" + "\n".join(server.uncaught_errors(since=errors_before))[-6000:])
    assert server.uncaught_errors(since=errors_before) == [], "the server logged an uncaught exception"


# ----------------------------------------------------------------------------------------------- the data

def sample_exports(tmp_dir: Path | None = None, *, n_patients: int = 1500) -> dict[str, Path]:
    """The sample exports to upload: ``sample_data/`` when present, else generated into ``tmp_dir``.

    Falls back to tiny hand-written CSVs that follow the data contract when the sample generator is missing.
    """
    if all((SAMPLE_DIR / f"{name}.csv").is_file() for name in EXPORTS):
        return {name: SAMPLE_DIR / f"{name}.csv" for name in EXPORTS}
    out = Path(tmp_dir or tempfile.mkdtemp(prefix="kap-e2e-sample-"))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from analytics.sample import write_clinic
    except ImportError:
        return tiny_exports(out)
    return {name: Path(path) for name, path in write_clinic(out, n_patients).items()}


def tiny_exports(out: Path) -> dict[str, Path]:
    """Three small exports (40 patients) that follow the data contract, written into ``out``; quick to upload."""
    out.mkdir(parents=True, exist_ok=True)
    sessions = ["patient_id,session_date,session_type,route,dose_mg,phq9,gad7,craving"]
    followups = ["patient_id,assessment_date,window_days,days_abstinent,any_use,phq9,status"]
    patients = ["patient_id,primary_substance,program,sex,age"]
    for i in range(40):
        pid = f"{i + 1:05d}"
        sessions.append(f"{pid},2025-0{1 + i % 6}-01,assessment,,,{12 + i % 10},{9 + i % 8},6")
        for k in range(3):
            sessions.append(f"{pid},2025-0{1 + i % 6}-{2 + 3 * k:02d},ketamine,iv,{40 + i % 30},,,")
        relapse = i % 3 == 0
        followups.append(f"{pid},2025-0{2 + i % 6}-15,30,{20 if relapse else 30},{'yes' if relapse else 'no'},"
                         f"{6 + i % 9},active")
        patients.append(f"{pid},{('alcohol', 'opioids', 'cocaine')[i % 3]},"
                        f"{('ketamine only', 'ketamine + therapy')[i % 2]},{('female', 'male')[i % 2]},{25 + i}")
    paths = {}
    for name, lines in zip(EXPORTS, (sessions, followups, patients)):
        paths[name] = out / f"{name}.csv"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


# ----------------------------------------------------------------------------------------------- the journey

def find_data_page(page: Any) -> NavPage:
    """The Data page (the upload page), from the navigation."""
    pages = discover_pages(page)
    for nav in pages:
        if nav.title.strip().lower() == "data":
            return nav
    raise AssertionError(f"No page titled 'Data' in the navigation (found: {[p.title for p in pages]}).")


def upload_exports(page: Any, files: dict[str, Path]) -> None:
    """Upload the exports on the Data page like a user: choose each file, press 'Check and load', wait."""
    go_to(page, find_data_page(page))
    for name, path in files.items():
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text=f"{name}.csv")
        assert uploader.count() == 1, f"expected one file uploader labelled '{name}.csv', found {uploader.count()}"
        in_form = uploader.locator("xpath=ancestor::*[@data-testid='stForm']").count() > 0
        before = runs_finished(page)
        uploader.locator('input[type="file"]').set_input_files(str(path))
        uploader.locator('[data-testid="stFileChipName"]').filter(has_text=path.name).wait_for(state="visible",
                                                                                        timeout=RUN_TIMEOUT_MS)
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stFileChipIconSpinner\"]')",
                               timeout=RUN_TIMEOUT_MS)
        errors = uploader.locator('[data-testid="stFileChipIconError"]')
        assert errors.count() == 0, f"the upload of {path.name} failed: {uploader.inner_text()}"
        if not in_form:  # outside a form, choosing a file reruns the page
            wait_for_rerun(page, after=before)
    before = runs_finished(page)
    page.get_by_role("button", name="Check and load").click()
    wait_for_run(page, after=before)
