"""emosum.pipeline: step selection, run.json, failure messages, resume, and the whole cpu-smoke pipeline."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from emosum import pipeline as P

ROOT = Path(__file__).resolve().parents[1]
EMOSUM = Path(sys.executable).parent / "emosum"
LOG = "with open(run_dir/'log.txt', 'a') as f: f.write('{}\\n')\n"


@pytest.fixture
def fake_nbs(tmp_path):
    "Three tiny step notebooks (+ a 07 without run cells); step 01 fails while the run folder holds FAIL; demonstrations never run."
    nbs = tmp_path / "nbs"; nbs.mkdir()
    P._write_demo_notebook(nbs / "00_first.ipynb", LOG.format("00") + "assert overrides == {} or overrides == {'seed': 7}, overrides",
                           demo="raise SystemExit('a demonstration cell ran inside a run')")
    P._write_demo_notebook(nbs / "01_second.ipynb", "if (run_dir/'FAIL').exists():\n    raise RuntimeError('planted failure')\n" + LOG.format("01"))
    P._write_demo_notebook(nbs / "02_third.ipynb", LOG.format("02") + "assert profile == 'cpu-smoke'")
    P._write_demo_notebook(nbs / "07_pipeline.ipynb", None, demo="raise SystemExit('07 must not run')")
    return nbs


def _log(rd): return (rd / "log.txt").read_text().split() if (rd / "log.txt").exists() else []


def test_list_and_select_steps(fake_nbs):
    steps = P.list_steps(fake_nbs)
    assert list(steps) == ["00", "01", "02"]
    assert P.select_steps("1-2", steps) == ["01", "02"] and P.select_steps(["third"], steps) == ["02"]
    assert P.select_steps("00,02", steps) == ["00", "02"]
    with pytest.raises(ValueError, match="Unknown step 'fourth'.*00_first"): P.select_steps("fourth", steps)
    real = P.list_steps()
    assert list(real) == ["01", "02", "03", "04", "05", "06"] and all(p.name[:2] == k for k, p in real.items())


def test_failure_message_resume_force_and_subsets(fake_nbs, tmp_path):
    rd = tmp_path / "runs" / "r"; rd.mkdir(parents=True); (rd / "FAIL").touch()
    kw = dict(nbs_dir=fake_nbs, progress_bar=False)
    with pytest.raises(P.StepFailed) as ei:
        P.run("cpu-smoke", name=str(rd), **kw)
    msg = str(ei.value)
    assert "Step 01 (01_second.ipynb) failed in cell" in msg and "RuntimeError: planted failure" in msg
    assert "line 3: raise RuntimeError('planted failure')" in msg   # line 1 is '#| run' and str(rd / "01_second.ipynb") in msg and "resume" in msg
    assert ei.value.step == "01" and ei.value.ename == "RuntimeError"
    r = P.read_run(rd)
    assert r["status"] == "failed" and r["steps"]["00"]["status"] == "done" and "02" not in r["steps"]
    assert r["steps"]["01"]["error"]["cell_index"] == ei.value.cell_index and r["steps"]["01"]["error"]["evalue"] == "planted failure"
    assert _log(rd) == ["00"]
    for k in ("profile", "overrides", "config", "config_hash", "git", "versions", "data", "created", "updated"): assert k in r
    assert r["data"]["data_path"]["sha256"] and r["versions"]["papermill"] and r["git"]["commit"]

    (rd / "FAIL").unlink()
    started00 = r["steps"]["00"]["started"]
    r = P.run("cpu-smoke", name=str(rd), **kw)                               # resumes at 01
    assert r["status"] == "done" and _log(rd) == ["00", "01", "02"]
    assert r["steps"]["00"]["started"] == started00 and "last_skipped" in r["steps"]["00"]
    assert all(s["status"] == "done" and s["seconds"] > 0 for s in r["steps"].values())

    P.run("cpu-smoke", name=str(rd), **kw)                                   # all done: nothing runs
    assert _log(rd) == ["00", "01", "02"]
    P.run("cpu-smoke", name=str(rd), steps="02", force=True, **kw)           # --force on a subset
    assert _log(rd) == ["00", "01", "02", "02"]
    P.run("cpu-smoke", name=str(rd), steps="01", force=True, **kw)           # redo 01 ...
    P.run("cpu-smoke", name=str(rd), **kw)                                   # ... makes 02 stale: it reruns, 00 doesn't
    assert _log(rd) == ["00", "01", "02", "02", "01", "02"]
    P.run("cpu-smoke", name=str(rd), seed=7, **kw)                           # other overrides: everything reruns
    assert _log(rd)[-3:] == ["00", "01", "02"] and P.read_run(rd)["overrides"] == {"seed": 7}


def test_bad_profile_or_override_fails_before_running(fake_nbs, tmp_path):
    with pytest.raises(KeyError, match="did you mean 'cpu-smoke'"): P.run("cpu-smok", name=str(tmp_path / "x"), nbs_dir=fake_nbs)
    with pytest.raises(KeyError, match="did you mean 'lora_r'"): P.run("cpu-smoke", name=str(tmp_path / "x"), nbs_dir=fake_nbs, lora_rank=2)
    with pytest.raises(TypeError, match="max_steps='two'"): P.run("cpu-smoke", name=str(tmp_path / "x"), nbs_dir=fake_nbs, max_steps="two")
    assert not (tmp_path / "x").exists()


def _emosum(*args, env=None, timeout=900, **kw):
    return subprocess.run([str(EMOSUM), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, **kw)


@pytest.mark.slow
def test_whole_pipeline_killed_and_resumed(tmp_path):
    """`emosum run --profile cpu-smoke`, killed (SIGKILL) while a step runs, then rerun: finished steps are not re-executed."""
    env = {**os.environ, "EMOSUM_RUNS": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    steps = list(P.list_steps())
    assert len(steps) >= 2, steps
    kill_at = steps[min(2, len(steps) - 1)]            # kill while the third step (or the last one) runs
    rd = tmp_path / "runs" / "smoke"
    t0 = time.time()
    proc = subprocess.Popen([str(EMOSUM), "run", "--profile", "cpu-smoke", "--name", "smoke", "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        while proc.poll() is None and time.time() - t0 < 600:
            r = P.read_run(rd) if (rd / "run.json").exists() else None
            if r and r["steps"].get(kill_at, {}).get("status") == "running": break
            time.sleep(0.5)
        assert proc.poll() is None, f"the run ended before step {kill_at} started:\n{proc.stdout.read()[-5000:]}"
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)                # our own process group (start_new_session)
        proc.wait(30)
    finally:
        if proc.poll() is None: os.killpg(proc.pid, signal.SIGKILL)
    killed = P.read_run(rd)
    assert killed["steps"][kill_at]["status"] == "running" and killed["status"] == "running"
    done_before = {k: v["started"] for k, v in killed["steps"].items() if v["status"] == "done"}
    assert set(done_before) == set(steps[: steps.index(kill_at)])

    t1 = time.time()
    r = _emosum("run", "--profile", "cpu-smoke", "--name", "smoke", "--no-progress", env=env)
    resume_s = time.time() - t1
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    state = P.read_run(rd)
    assert state["status"] == "done" and list(state["steps"]) == steps
    for k, started in done_before.items():              # not re-executed
        assert state["steps"][k]["started"] == started and "last_skipped" in state["steps"][k]
    assert state["steps"][kill_at]["started"] > killed["steps"][kill_at]["started"]
    for k in steps:
        assert (rd / P.list_steps()[k].name).exists() and state["steps"][k]["status"] == "done"
    assert f"run: {rd}" in r.stdout and "status done" in r.stdout
    assert state["profile"] == "cpu-smoke" and state["git"]["commit"] and state["versions"]["torch"]
    if "01" in steps: assert any(k.startswith("split:") for k in state["data"]), state["data"]
    if "05" in steps:
        assert (rd / "metrics.json").exists() and (rd / "scores.jsonl").exists() and "ROUGE-L" in r.stdout
    print(f"\ncpu-smoke pipeline: {sum(s['seconds'] for s in state['steps'].values()):.0f} s of steps; "
          f"resume took {resume_s:.0f} s; total {time.time() - t0:.0f} s")
    print({k: s["seconds"] for k, s in state["steps"].items()})

    r = _emosum("list", env=env)                         # the run is listed with its metrics
    assert r.returncode == 0 and "smoke" in r.stdout and "cpu-smoke" in r.stdout and "done" in r.stdout
    if (rd / "scores.jsonl").exists():
        r = _emosum("compare", "smoke", str(rd), env=env)
        assert r.returncode == 0 and "overall" in r.stdout, r.stderr


def test_a_run_cannot_be_executed_twice_at_once(fake_nbs, tmp_path):
    rd = tmp_path / "runs" / "locked"; rd.mkdir(parents=True)
    (rd / ".run.lock").write_text(f"{os.getppid()} 2026-01-01\n")          # a live process holds it
    with pytest.raises(P.RunLocked, match=f"being executed by process {os.getppid()}"):
        P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="00", progress_bar=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"]); dead.wait()
    (rd / ".run.lock").write_text(f"{dead.pid} 2026-01-01\n")              # left by a killed run: taken over
    r = P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="00", progress_bar=False)
    assert r["steps"]["00"]["status"] == "done" and r["status"] == "partial" and not (rd / ".run.lock").exists()


def test_notebook_params_reach_every_step_and_count_for_resume(fake_nbs, tmp_path):
    P._write_demo_notebook(fake_nbs / "03_params.ipynb", "with open(run_dir/'log.txt', 'a') as f: f.write(f'{split}\\n')")
    nb = json.loads((fake_nbs / "03_params.ipynb").read_text())
    nb["cells"][0]["source"] += "\nsplit = 'valid'"                     # the step's own parameter
    (fake_nbs / "03_params.ipynb").write_text(json.dumps(nb))
    rd = tmp_path / "runs" / "p"
    P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="03", progress_bar=False)
    P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="03", progress_bar=False, params={"split": "test"})
    P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="03", progress_bar=False, params={"split": "test"})   # same: skipped
    assert _log(rd) == ["valid", "test"] and P.read_run(rd)["params"] == {"split": "test"}
    with pytest.raises(ValueError, match="params may not set"): P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, params={"run_dir": "x"})


def test_real_steps_reach_papermill_without_demonstration_cells(tmp_path, monkeypatch):
    """What papermill receives for each real step: the parameters, export and run cells, nothing else; and the chapters
    keep run and demonstration cells apart (no run cell needs a demonstration's variable, and the other way round)."""
    import papermill as pm
    seen = {}
    def fake_execute(nb, out, **kw):
        seen[Path(out).name] = nb
        Path(out).write_text("{}")
    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    P.run("cpu-smoke", name=str(tmp_path / "r"), progress_bar=False)
    steps = P.list_steps()
    assert sorted(seen) == sorted(p.name for p in steps.values())
    for name, nb in seen.items():
        kinds = [P.cell_kind(c) for c in nb.cells]
        assert "demo" not in kinds and "run" in kinds and kinds.count("parameters") == 1, (name, kinds)
        full = [P.cell_kind(c) for c in P._read_nb(steps[name[:2]]).cells]
        assert full.count("demo") > 0 and kinds.count("run") == full.count("run") and kinds.count("export") == full.count("export")
    assert {k: P.separation_problems(p) for k, p in steps.items()} == {k: [] for k in steps}
