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
    assert "line 3: raise RuntimeError('planted failure')" in msg   # line 1 is '#| run'
    assert str(rd / "01_second.ipynb") in msg and "resume" in msg and f"--name {rd} " in msg   # the name as given (a path here)
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

    # reference_adapter: a zero-shot run (no step 03) predicts and scores the same records with the smoke run's adapter too
    r = _emosum("run", "--profile", "cpu-smoke", "--name", "ref", "--steps", "01,04,05", "--no-progress",
                "-p", f"reference_adapter={rd / 'adapter'}", env=env)
    ref = tmp_path / "runs" / "ref"
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert (ref / "compare" / "shipped" / "metrics.json").is_file() and not (ref / "compare" / "zero-shot").exists()
    header = next(l for l in r.stdout.splitlines() if l.startswith("metric"))
    assert "shipped" in header and "zero-shot" not in header, r.stdout


@pytest.mark.slow
def test_training_step_resumes_after_an_interruption(tmp_path):
    """The real step 03: after an interruption, the same `emosum run` continues training from the last checkpoint (it used
    to delete the checkpoints and restart at step 1, saying so only inside the notebook), and says so on the console; other
    training settings are an error naming them; --force starts afresh."""
    import shutil
    env = {**os.environ, "EMOSUM_RUNS": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    args = ["run", "--profile", "cpu-smoke", "--name", "r", "--steps", "01,03", "--no-progress", "-p", "max_steps=4", "-p", "save_steps=2",
            "-P", "n_samples=0"]
    rd = tmp_path / "runs" / "r"
    r = _emosum(*args, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.rmtree(rd / "checkpoints" / "checkpoint-4"); shutil.rmtree(rd / "adapter")   # as a Ctrl-C after step 2 leaves it
    st = P.read_run(rd); st["status"] = st["steps"]["03"]["status"] = "interrupted"; (rd / "run.json").write_text(json.dumps(st))
    stamp = (rd / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").stat().st_mtime_ns
    steps = lambda: [x["step"] for x in map(json.loads, (rd / "train_log.jsonl").read_text().splitlines()) if x.get("loss") is not None]

    r = _emosum(*args, env=env)                                    # the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 03: UserWarning: resuming training from" in r.stderr and "checkpoint-2" in r.stderr
    assert steps() == [1, 2, 3, 4] and (rd / "adapter" / "adapter_config.json").exists()
    assert (rd / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").stat().st_mtime_ns == stamp

    st = P.read_run(rd); st["status"] = st["steps"]["03"]["status"] = "interrupted"; (rd / "run.json").write_text(json.dumps(st))
    r = _emosum(*args[:-2], "-p", "learning_rate=0.002", "-P", "n_samples=0", env=env)   # other settings: an error, nothing deleted
    assert r.returncode == 1 and "CheckpointMismatch" in r.stderr and "learning_rate: 0.001 then, 0.002 now" in r.stderr, r.stderr[-3000:]
    assert (rd / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").stat().st_mtime_ns == stamp

    r = _emosum(*args, "--force", env=env)                         # --force: afresh
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 03: UserWarning: overwrite=True (--force): deleting" in r.stderr and steps() == [1, 2, 3, 4]
    assert (rd / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").stat().st_mtime_ns != stamp


def _hold_lock(path):
    "A live process holding the run's lock, as a running `emosum run` does (before it has written anything else)."
    p = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
                          "print('held', flush=True); time.sleep(120)", str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_run_cannot_be_executed_twice_at_once(fake_nbs, tmp_path):
    "The lock is an OS file lock: a live holder is refused even before it wrote its pid; a dead holder's lock is free again."
    rd = tmp_path / "runs" / "locked"; rd.mkdir(parents=True)
    holder = _hold_lock(rd / ".run.lock")
    try:
        assert P.run_locked(rd)
        with pytest.raises(P.RunLocked, match="being executed by another process"):
            P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="00", progress_bar=False)
        assert _log(rd) == []
    finally:
        holder.kill(); holder.wait()
    assert not P.run_locked(rd)                                          # killed: the OS released it
    (rd / ".run.lock").write_text("12345 2026-01-01\n")                  # a lock file as older versions left it: no lock held
    r = P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="00", progress_bar=False)
    assert r["steps"]["00"]["status"] == "done" and r["status"] == "partial" and r["pid"] == os.getpid() and not P.run_locked(rd)


def test_two_runs_started_together_never_share_the_folder(fake_nbs, tmp_path):
    "Two `run`s of the same name started at once: one runs, the other is refused (a check-then-write lock let both run)."
    P._write_demo_notebook(fake_nbs / "00_first.ipynb", "import time; time.sleep(4)\n" + LOG.format("00"))
    rd = tmp_path / "runs" / "same"
    code = ("import sys; from emosum import pipeline as P\n"
            "try: P.run('cpu-smoke', name=sys.argv[1], nbs_dir=sys.argv[2], steps='00', progress_bar=False)\n"
            "except P.RunLocked: sys.exit(3)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(rd), str(fake_nbs)], stderr=subprocess.DEVNULL) for _ in range(2)]
    codes = sorted(p.wait(120) for p in procs)
    assert codes == [0, 3] and _log(rd) == ["00"]


def test_a_killed_run_does_not_read_running(fake_nbs, tmp_path):
    "SIGKILL leaves run.json at `running`; `emosum list`, the summary and the next run see that no process holds the run."
    rd = tmp_path / "runs" / "k"
    P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="00", progress_bar=False)
    st = P.read_run(rd); st["status"] = "running"; st["steps"]["00"]["status"] = "running"
    (rd / "run.json").write_text(json.dumps(st))                         # what a SIGKILL mid-step leaves behind
    assert P.run_status(rd) == "killed" and [r["status"] for r in P.list_runs(rd.parent)] == ["killed"]
    assert "status killed" in P.summary(rd) and "00 killed" in P.summary(rd)
    holder = _hold_lock(rd / ".run.lock")                               # while a live process holds it, it is running
    try: assert P.run_status(rd) == "running" and [r["status"] for r in P.list_runs(rd.parent)] == ["running"]
    finally: holder.kill(); holder.wait()
    r = P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, steps="00", progress_bar=False)   # the next run takes over and redoes it
    assert r["steps"]["00"]["status"] == "done" and _log(rd) == ["00", "00"]


def test_copied_run_folder_reports_itself(fake_nbs, tmp_path):
    import shutil
    a, b = tmp_path / "runs" / "a", tmp_path / "elsewhere" / "b"
    P.run("cpu-smoke", name=str(a), nbs_dir=fake_nbs, steps="00", progress_bar=False)
    shutil.copytree(a, b)
    r = P.run("cpu-smoke", name=str(b), nbs_dir=fake_nbs, progress_bar=False)
    assert r["run_dir"] == str(b.resolve()) and r["name"] == "b" and P.read_run(b)["run_dir"] == str(b.resolve())
    assert all(Path(s["output"]).parent == b.resolve() for s in r["steps"].values())
    assert P.read_run(a)["run_dir"] == str(a.resolve())                  # the original is untouched


def test_run_folder_deleted_mid_run_is_a_clear_error(fake_nbs, tmp_path):
    P._write_demo_notebook(fake_nbs / "01_second.ipynb", "import shutil; shutil.rmtree(run_dir)")
    rd = tmp_path / "runs" / "gone"
    with pytest.raises(P.RunFolderGone, match=f"The run folder {rd} disappeared while step 01"):
        P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, progress_bar=False)


def test_steps_warnings_reach_the_console_and_force_reaches_the_steps(fake_nbs, tmp_path, caplog):
    "A step's warnings are repeated in the log (the console), not only kept in its notebook; `force` goes to the steps that take it."
    P._write_demo_notebook(fake_nbs / "01_second.ipynb", "import warnings\nwarnings.warn('resuming training from checkpoint-30')\n"
                           "with open(run_dir/'log.txt', 'a') as f: f.write(f'force={force}\\n')")
    nb = json.loads((fake_nbs / "01_second.ipynb").read_text())
    nb["cells"][0]["source"] += "\nforce = False"                       # this step declares `force`; 00 and 02 do not
    (fake_nbs / "01_second.ipynb").write_text(json.dumps(nb))
    rd = tmp_path / "runs" / "w"
    with caplog.at_level("WARNING", logger="emosum.pipeline"):
        P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, progress_bar=False)
    assert "step 01: UserWarning: resuming training from checkpoint-30" in caplog.text
    P.run("cpu-smoke", name=str(rd), nbs_dir=fake_nbs, progress_bar=False, force=True)
    assert _log(rd) == ["00", "force=False", "02", "00", "force=True", "02"]
    assert P.parameter_names(P.list_steps()["03"]) >= {"resume", "force"}   # the training step takes it (and resumes by default)


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


def test_summary_shows_the_reference_runs_as_columns(tmp_path):
    "compare/<name>/metrics.json (the profile's reference_adapter, scored by step 05) become columns of the run summary."
    rd = tmp_path / "run"
    m = {"overall": {"rougeL": 0.2, "semsim": 0.5}, "json_valid_rate": 1.0, "n": 2,
         "baselines": {"copy": {"overall": {"rougeL": 0.1, "semsim": 0.3}}}}
    (rd / "compare" / "shipped").mkdir(parents=True)
    (rd / "metrics.json").write_text(json.dumps(m))
    (rd / "compare" / "shipped" / "metrics.json").write_text(json.dumps({**m, "overall": {"rougeL": 0.4, "semsim": 0.6}, "json_valid_rate": 0.5}))
    h = P.headline(rd)
    assert h["shipped.rougeL"] == 0.4 and h["shipped.json_valid_rate"] == 0.5 and h["rougeL"] == 0.2
    lines = P._metric_lines(h)
    assert lines[0].split() == ["metric", "model", "copy", "shipped"]
    assert next(l for l in lines if l.startswith("ROUGE-L")).split()[1:] == ["0.200", "0.100", "0.400"]
    assert next(l for l in lines if l.startswith("JSON valid")).split()[2:] == ["1.000", "-", "0.500"]



def test_summary_names_a_cross_validation_a_pool_and_a_bare_folder(tmp_path):
    "Folders without run.json: a CV and a pool say what they are from cv.json, a bare folder says it has no run.json."
    import json
    from emosum.pipeline import summary
    cv, pool, bare = tmp_path / "cv", tmp_path / "pool", tmp_path / "bare"
    for d in (cv, pool, bare): d.mkdir()
    (cv / "cv.json").write_text(json.dumps({"profile": "p", "folds": 5, "folds_done": [0, 1, 2], "partial": True}))
    (pool / "cv.json").write_text(json.dumps({"profile": "p", "overrides": {"pool": ["a", "b"], "utility": "rougeL+0.25*semsim"}}))
    assert summary(cv).splitlines()[0] == f"cross-validation: {cv}  (profile p, 3 of 5 folds scored, partial)"
    whole = tmp_path / "whole"; whole.mkdir()                  # cross_validate's own cv.json (no folds_done), decoding another's adapters
    (whole / "cv.json").write_text(json.dumps({"profile": "p", "folds": 5, "adapters_from": str(tmp_path / "t12")}))
    assert summary(whole).splitlines()[0] == f"cross-validation: {whole}  (profile p, decoding t12's adapters, 5 of 5 folds scored)"
    assert summary(pool).splitlines()[0] == f"pool: {pool}  (a + b; utility rougeL+0.25*semsim)"
    assert summary(bare).splitlines()[:2] == [f"run: {bare}  (no run.json)", "no metrics.json yet (the evaluation step has not run)"]
    (bare / "metrics.json").write_text(json.dumps({"overall": {"rougeL": 0.25}, "n": 3}))          # what emosum evaluate writes
    assert summary(bare).splitlines()[0] == f"evaluation: {bare}  (scored predictions)"
    (bare / "cv.json").write_text('{"profile": "p", "fol')                                           # torn: no crash
    assert summary(bare).splitlines()[0] == f"evaluation: {bare}  (scored predictions)"
    from emosum.pipeline import list_runs                                  # emosum list: a CV's folds, a pool's parts
    rows = {r["name"]: r for r in list_runs(tmp_path)}
    assert {k: rows["cv"][k] for k in ("profile", "status", "steps")} == {"profile": "p", "status": "cv, partial", "steps": "3/5 folds"}
    assert {k: rows["pool"][k] for k in ("profile", "status", "steps")} == {"profile": "p", "status": "pool", "steps": "2 CVs"}
    assert (rows["bare"]["status"], rows["bare"]["steps"]) == ("-", "0/0")
    assert (rows["whole"]["status"], rows["whole"]["steps"]) == ("cv", "5/5 folds")
