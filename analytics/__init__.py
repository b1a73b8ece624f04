"""KAP Outcomes analytics.

One BLAS thread per process. Our processes run analyses on several Python threads at once (the dashboard's
warm-up beside a page, the command line's PHQ-9 model beside survival), and the test suite runs two workers: with
OpenBLAS's own threads on top, the threads outnumber the cores and OpenBLAS's waiting threads spin. On a 2-core
machine with a second process busy, the Cox models of "who benefits" at 50,000 patients took 1.7-2.1 s with one
BLAS thread in every run and 37-75 s in 2 of 5 runs with OpenBLAS's default of one thread per core; on an idle
machine the default gained no wall time and used twice the CPU (README, Scaling).
An ``OPENBLAS_NUM_THREADS`` set by whoever runs us is kept.

Freed memory kept for reuse (Linux; :func:`reuse_freed_memory`, called by the command line and by the dashboard
server, not on import). An analysis works through many short-lived arrays of millions of values. On the benchmark
machine what it paid for was less the arithmetic than the first touch of memory just handed back to the system and
asked for again (page faults): about 8 of 16.5 s of an ``analyze`` at 200,000 patients were system time, and
3.6-4.2 s of the dashboard's warm-up at 50,000 patients. Two settings keep freed memory for reuse:

- glibc's malloc serves blocks up to 32 MiB from its heap (its largest setting; larger blocks stay fresh mappings)
  and keeps up to 1 GiB of freed heap, instead of mapping each large block afresh and unmapping it when freed;
- NumPy asks for no transparent huge pages (each is 2 MiB to clear, again after every free).

The dashboard's warm-up at 50,000 patients (every page's default analyses and figures, in-process, three runs each,
alternating): 16.2-16.4 s instead of 17.3-18.3 s, system time 1.8-2.1 s instead of 3.6-4.2 s. The price is memory
the process keeps after a large analysis: at most 1 GiB of freed heap, reused by the next one. Settings of whoever
runs us are kept: ``NUMPY_MADVISE_HUGEPAGE``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``.
"""

import ctypes
import os
import sys

from threadpoolctl import threadpool_limits

_THREADS = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS libraries loaded from now on (SciPy's copy)
if _THREADS.isdigit() and int(_THREADS) > 0:
    threadpool_limits(limits=int(_THREADS), user_api="blas")  # those already loaded (numpy's, under Streamlit)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
HEAP_BLOCKS_UP_TO = 32 << 20  # bytes
KEEP_FREED_UP_TO = 1 << 30  # bytes


def reuse_freed_memory() -> bool:
    """Make the settings above for this process (Linux; glibc for malloc's). True when malloc's were made.
    NumPy reads its setting when it is imported; if it already is (under Streamlit), it is told directly."""
    if not sys.platform.startswith("linux"):
        return False
    if os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0") == "0" and "numpy" in sys.modules:
        try:
            sys.modules["numpy"]._core.multiarray._set_madvise_hugepage(False)
        except AttributeError:  # another NumPy: it keeps its own setting
            pass
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_UP_TO))
