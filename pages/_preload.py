"""Import the heavy libraries and every analysis module once per server process, in the background.

SciPy's ``stats`` alone takes 1–2 s to import on a two-core machine, statsmodels' survival code most of a second,
and each analysis page used to pay such imports on its first view (issue 21). Importing this module (dashboard.py
does, at the first run of the first visitor) starts one daemon thread that imports them while the visitor reads
the first page or chooses files to upload; a page that needs a module before the thread has reached it simply
imports it itself (Python's import lock makes the two wait for one import, never run it twice). No data is read or
kept: only code is loaded, so nothing is shared between sessions.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

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
    for name in modules():
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a module that cannot load fails again, with its message, where it is used
            continue


THREAD = threading.Thread(target=_import_all, name="kap-preload", daemon=True)
THREAD.start()
