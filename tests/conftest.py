"""Shared pytest fixtures: keep runs and caches of the test session out of the working tree."""
import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMOSUM_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session", autouse=True)
def _isolated_runs(tmp_path_factory):
    "Each test session writes its run folders to a temporary folder, not to runs/."
    if not os.environ.get("EMOSUM_RUNS"):
        os.environ["EMOSUM_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    "The real data beside the project (../shared/data or $EMOSUM_DATA); a test that needs it skips, saying why, on a clone without it."
    if not (SHARED_DATA / "longemotion_es" / "es_dev.jsonl").is_file():
        pytest.skip(f"needs the real data at {SHARED_DATA} (the team's ../shared/data; set EMOSUM_DATA to use another folder)")
    return SHARED_DATA
