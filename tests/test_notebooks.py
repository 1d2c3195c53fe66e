"""Run every notebook's own cells (their assertions are the tests), each in a fresh process.

Cells flagged `#| slow` or `#| gpu` (see `tst_flags` in pyproject.toml) are skipped here; the
slow ones run in the end-to-end tests. Heavy cells otherwise run only when a parameter asks.
"""
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb"))

RUNNER = """
import sys
from nbdev.test import test_nb
ok, secs = test_nb(sys.argv[1], skip_flags=['slow', 'gpu'], showerr=True, cell_timeout=1200)
print(f'{sys.argv[1]}: {"ok" if ok else "FAILED"} in {secs:.1f}s')
sys.exit(0 if ok else 1)
"""


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook(nb):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", RUNNER, str(ROOT / "nbs" / nb)], cwd=ROOT / "nbs", env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"notebook {nb} failed:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
