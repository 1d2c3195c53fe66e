"""The package is exactly what the notebooks export, and the notebooks are clean."""
import shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _snapshot(paths):
    return {p: p.read_bytes() for d in paths for p in sorted(d.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _run_in_copy(tmp_path, cmd):
    "Run an nbdev command in a copy of the project and return what it changed."
    proj = tmp_path / "proj"
    shutil.copytree(ROOT, proj, ignore=shutil.ignore_patterns(".venv", "runs", ".git", "__pycache__", "*.egg-info", ".pytest_cache"))
    dirs = [proj / "emosum", proj / "nbs"]
    before = _snapshot(dirs)
    r = subprocess.run([str(BIN / cmd)], cwd=proj, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after = _snapshot(dirs)
    return sorted(str(p.relative_to(proj)) for p in set(before) | set(after) if before.get(p) != after.get(p))


def test_export_is_up_to_date(tmp_path):
    changed = _run_in_copy(tmp_path, "nbdev-export")
    assert not changed, f"nbdev-export would change {changed}: run `make export` and commit"


def test_notebooks_are_clean(tmp_path):
    changed = _run_in_copy(tmp_path, "nbdev-clean")
    assert not changed, f"nbdev-clean would change {changed}: run `make export` and commit"
