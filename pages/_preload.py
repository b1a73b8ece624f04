"""Import the heavy libraries and every analysis module once per server process, in the background.

SciPy's ``stats`` alone takes 1–2 s to import on a two-core machine, statsmodels' survival code most of a second,
and each analysis page used to pay such imports on its first view (issue 21). Importing this module (dashboard.py
does, at the first run of the first visitor) starts one daemon thread that imports them while the visitor reads
the first page or chooses files to upload; a page that needs a module before the thread has reached it simply
imports it itself (Python's import lock makes the two wait for one import, never run it twice). No data is read or
kept: only code is loaded, so nothing is shared between sessions.

Once the modules are in, their objects are moved out of the cycle collector's way (``gc.freeze``). Streamlit runs a
full collection after every script run (its ``runner.postScriptGC``), and with these libraries loaded that
collection walked ~250,000 objects that never become garbage: 0.15–0.21 s of every click at 50,000 patients,
measured in the server; 0.04–0.05 s once they are frozen. What is garbage at that moment is collected first; a
frozen object is still freed when nothing refers to it (only a cycle of frozen objects would stay), and the sessions'
data (uploads, cohorts, results, figures), created later, is collected as before.

The server also keeps freed memory for reuse (:func:`analytics.reuse_freed_memory`, set on import): the
warm-up at 50,000 patients 16.2-16.4 s instead of 17.3-18.3 s.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
import threading

from analytics import reuse_freed_memory

LIBRARIES = ("scipy.special", "scipy.optimize", "scipy.sparse", "scipy.stats", "statsmodels.duration.survfunc",
             "plotly.graph_objects", "plotly.io", "duckdb")
PACKAGES = ("analytics.engines", "analytics.outcomes", "analytics.privacy", "analytics.report")


def modules() -> list[str]:
    """The libraries, then every module of the analysis packages (in that order: the libraries are the slow part)."""
    names = list(LIBRARIES)
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")]
    return names


def _import_all() -> None:
    try:
        names = modules()  # imports the packages while listing them
    except Exception:  # noqa: BLE001 - as below: the page that needs the module imports it and says what failed
        names = list(LIBRARIES)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a module that cannot load fails again, with its message, where it is used
            continue
    gc.collect()  # what is garbage now goes first: frozen objects are never collected
    gc.freeze()


reuse_freed_memory()
THREAD = threading.Thread(target=_import_all, name="kap-preload", daemon=True)
THREAD.start()
