"""Peak memory of validation stays a small multiple of the export's size (issue #20; README "Limits").

A fresh Python process imports the package and validates a tiny export first (the first call's lazy imports), then
records its resident memory; validating a ~20 MB sample clinic may then raise its peak (``VmHWM``) by at most
six times the size of the files read. Measured in the same process, so the interpreter and libraries do not count; the
bound holds with room to spare (4.7× here; 9.2× before issue #20), so the test is not flaky.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analytics.sample import write_clinic

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 6.0  # peak memory growth / bytes of the files read (README "Limits")

_CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from schemas.validate import load_exports
    small, large = sys.argv[2], sys.argv[3]

    def rss_mb(field="VmRSS"):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024

    load_exports(small + "/sessions.csv", small + "/followups.csv", small + "/patients.csv")  # lazy imports
    before = rss_mb()
    data = load_exports(large + "/sessions.csv", large + "/followups.csv", large + "/patients.csv")
    peak = rss_mb("VmHWM")  # this process image's own peak (ru_maxrss may start at the parent's: vfork + exec)
    print(json.dumps({"before_mb": before, "peak_mb": peak, "rows": data.files["sessions"].rows}))
""")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc (Linux)")
def test_validate_peak_memory_is_at_most_six_times_the_files_read(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    write_clinic(small, n_patients=200, seed=1)
    paths = write_clinic(large, n_patients=22_000, seed=3)  # sessions.csv ≈ 20 MB, ≈ 330,000 rows
    size_mb = sum(p.stat().st_size for p in paths.values()) / 2**20
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(small), str(large)],
                         capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout)
    growth = result["peak_mb"] - result["before_mb"]
    assert result["rows"] > 300_000
    assert growth <= LIMIT * size_mb, (
        f"validating {size_mb:.1f} MB of exports raised peak memory by {growth:.0f} MB "
        f"({growth / size_mb:.1f}× the files; the limit is {LIMIT:.0f}×)")
