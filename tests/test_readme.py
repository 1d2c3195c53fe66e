"""README.md is generated from nbs/index.ipynb and shows the two commands first."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_readme  # noqa: E402


def test_readme_is_generated_from_index():
    assert (ROOT / "README.md").read_text() == make_readme.render(), "run: python tools/make_readme.py"


def test_readme_shows_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    first_code = text.index("```")
    assert "make run" in text[:first_code + 400] and "make test" in text[:first_code + 400]


def test_check_mode_flags_a_stale_readme(tmp_path):
    import shutil
    for d in ("tools", "nbs"): (tmp_path / d).mkdir()
    shutil.copy(ROOT / "tools" / "make_readme.py", tmp_path / "tools")
    shutil.copy(ROOT / "nbs" / "index.ipynb", tmp_path / "nbs")
    (tmp_path / "README.md").write_text("stale\n")
    check = lambda: subprocess.run([sys.executable, "tools/make_readme.py", "--check"], cwd=tmp_path).returncode
    assert check() == 1
    subprocess.run([sys.executable, "tools/make_readme.py"], cwd=tmp_path, check=True)
    assert check() == 0
