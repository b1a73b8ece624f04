"""KAP Outcomes analytics.

One BLAS thread per process. Our processes run analyses on several Python threads at once (the dashboard's
warm-up beside a page, the command line's PHQ-9 model beside survival), and the test suite runs two workers: with
OpenBLAS's own threads on top, the threads outnumber the cores and OpenBLAS's waiting threads spin. On a 2-core
machine with a second process busy, the Cox models of "who benefits" at 50,000 patients took 1.7-2.1 s with one
BLAS thread in every run and 37-75 s in 2 of 5 runs with OpenBLAS's default of one thread per core; on an idle
machine the default gained no wall time and used twice the CPU (README, Scaling).
An ``OPENBLAS_NUM_THREADS`` set by whoever runs us is kept.
"""

import os

from threadpoolctl import threadpool_limits

_THREADS = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS libraries loaded from now on (SciPy's copy)
if _THREADS.isdigit() and int(_THREADS) > 0:
    threadpool_limits(limits=int(_THREADS), user_api="blas")  # those already loaded (numpy's, under Streamlit)
