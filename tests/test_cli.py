"""The `emosum` console script, through subprocesses, as a user runs it."""
import importlib.util, json, os, re, subprocess, sys, time
from pathlib import Path

import pytest

from emosum import analysis as A
from emosum import pipeline as P

ROOT = Path(__file__).resolve().parents[1]
EMOSUM = Path(sys.executable).parent / "emosum"


def emosum(*args, runs=None, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if runs: env["EMOSUM_RUNS"] = str(runs)
    return subprocess.run([str(EMOSUM), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_console_script_is_installed_and_starts_fast():
    assert EMOSUM.exists(), "run `.venv/bin/pip install -e . --no-deps`"
    t0 = time.time(); r = emosum("--help"); secs = time.time() - t0
    assert r.returncode == 0 and all(c in r.stdout for c in ("run", "list", "compare", "predict", "evaluate"))
    assert secs < 10, secs
    r = subprocess.run([sys.executable, "-c", "import sys, emosum.pipeline; print(sorted(m for m in ('torch', 'pandas', 'papermill', 'transformers') if m in sys.modules))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout             # heavy imports are lazy
    r = emosum("run", "--help")
    assert r.returncode == 0 and "--profile" in r.stdout and "KEY=VALUE" in r.stdout and "--steps" in r.stdout


def test_profiles_and_config_errors(tmp_path):
    r = emosum("profiles")
    assert r.returncode == 0 and "cpu-smoke" in r.stdout and "qwen2-7b-12gb" in r.stdout
    r = emosum("run", "--profile", "qwen2-7b-12", runs=tmp_path)
    assert r.returncode == 2 and "did you mean 'qwen2-7b-12gb'" in r.stderr
    r = emosum("run", "--profile", "cpu-smoke", "-p", "num_epoch=1", runs=tmp_path)
    assert r.returncode == 2 and "did you mean 'num_epochs'" in r.stderr
    r = emosum("run", "--profile", "cpu-smoke", "-p", "num_epochs", runs=tmp_path)
    assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr
    r = emosum("run", "--profile", "cpu-smoke", "--steps", "42", runs=tmp_path)
    assert r.returncode == 2 and "Unknown step '42'" in r.stderr
    assert not any(tmp_path.iterdir())                    # nothing was started


def test_list_and_compare(tmp_path):
    runs = tmp_path / "runs"
    zs = A.make_synthetic_run(runs / "zero-shot", variant="zero-shot")
    ft = A.make_synthetic_run(runs / "fine-tuned")
    (ft / "run.json").write_text(json.dumps({"profile": "cpu-smoke", "status": "done", "updated": "2026-11-29T01:00:00",
                                             "steps": {"00": {"status": "done"}, "01": {"status": "done"}}}))
    (ft / "judge.json").write_text(json.dumps({"es_score": 3.25}))
    (runs / "empty").mkdir()
    r = emosum("list", runs=runs)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "profile", "status", "steps"] and "es_score" in lines[0]
    row = next(l for l in lines if l.startswith("fine-tuned"))
    m = json.loads((ft / "metrics.json").read_text())
    assert f"{m['overall']['rougeL']:.3f}" in row and "3.250" in row and f"2/{len(P.list_steps())}" in row
    assert not any(l.startswith("empty") for l in lines)

    r = emosum("compare", "zero-shot", "fine-tuned", "--metric", "rougeL", "--n-boot", "300", runs=runs)
    assert r.returncode == 0, r.stderr
    assert "rougeL: fine-tuned vs zero-shot" in r.stdout and "overall" in r.stdout
    assert all(f in r.stdout for f in ("causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect"))
    ov = next(l for l in r.stdout.splitlines() if l.strip().startswith("overall"))
    assert "+0." in ov and ov.rstrip().endswith("*")        # a clear, significant improvement
    r = emosum("compare", "zero-shot", "nope", runs=runs)
    assert r.returncode == 2 and "No run 'nope'" in r.stderr and "zero-shot" in r.stderr
    r = emosum("compare", "zero-shot", runs=runs)
    assert r.returncode == 2 and "at least two runs" in r.stderr


def test_run_failure_names_notebook_and_cell(tmp_path):
    "A failing step exits with status 1 and says which notebook, which cell, what error, and how to resume."
    r = emosum("run", "--profile", "cpu-smoke", "--name", "bad", "--steps", "01", "--no-progress",
               "-p", f"data_path={tmp_path / 'missing.jsonl'}", runs=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Step 01 (01_data_exploration.ipynb) failed in cell" in r.stderr and "missing.jsonl" in r.stderr
    assert "--name bad" in r.stderr and (tmp_path / "bad" / "01_data_exploration.ipynb").exists()
    st = json.loads((tmp_path / "bad" / "run.json").read_text())
    assert st["status"] == "failed" and st["steps"]["01"]["error"]["ename"]


@pytest.mark.skipif(importlib.util.find_spec("emosum.evaluation") is None, reason="emosum.evaluation has not landed yet")
def test_evaluate_command(tmp_path):
    src = A.make_synthetic_run(tmp_path / "syn")
    out = tmp_path / "eval"
    r = emosum("evaluate", "--predictions", src / "predictions.jsonl", "--data", src / "data" / "test.jsonl", "--out", out,
               "--no-baselines", "--n-boot", "100", runs=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 12 and 0 < m["overall"]["rougeL"] <= 1 and (out / "scores.jsonl").exists() and "ROUGE-L" in r.stdout


@pytest.mark.skipif(importlib.util.find_spec("emosum.inference") is None, reason="emosum.inference has not landed yet")
def test_predict_command(tmp_path):
    out = tmp_path / "pred"
    r = emosum("predict", "--profile", "cpu-smoke", "--data", "data/sample_es.jsonl", "--out", out, "--limit", "1", "-p", "max_new_tokens=8", runs=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and {"id", "status", "raw", "fields"} <= set(rows[0]) and (out / "submission.jsonl").exists()


def test_predict_with_the_shipped_adapter(tmp_path):
    out = tmp_path / "pred"
    r = emosum("predict", "--profile", "default", "--adapter", "embedded:smollm2-135m-es", "--data", "data/sample_es.jsonl",
               "--out", out, "--limit", "1", "-p", "max_new_tokens=8", runs=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    row = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert Path(row["adapter"]).parts[-2:] == ("adapters", "smollm2-135m-es") and "adapter merged" in r.stdout
    bad = emosum("predict", "--profile", "cpu-smoke", "--adapter", "embedded:smollm2-135m-es", "--data", "data/sample_es.jsonl",
                 "--out", tmp_path / "bad", "--limit", "1", runs=tmp_path)              # trained on another base model
    assert bad.returncode != 0 and "was trained on embedded:smollm2-135m-instruct" in bad.stderr, bad.stdout + bad.stderr


def test_skip_training_means_all_other_steps(tmp_path, monkeypatch):
    "`--skip training` (a zero-shot run) resolves to every step but 03; checked without executing anything."
    import emosum.pipeline as pl
    seen = {}
    monkeypatch.setattr(pl, "run", lambda profile, **kw: seen.update(kw) or {"run_dir": str(tmp_path)})
    monkeypatch.setattr(pl, "summary", lambda rd: "")
    assert pl.main(["run", "--profile", "cpu-smoke", "--skip", "training", "-P", "split=test", "-P", "limit=3"]) == 0
    assert seen["steps"] == [k for k in pl.list_steps() if k != "03"] and seen["params"] == {"split": "test", "limit": 3}


# ---------------------------------------------------------------- `emosum evaluate` refuses what it cannot score honestly
def _evaluate(capsys, preds_file, data, out, *extra):
    rc = P.main(["evaluate", "--predictions", str(preds_file), "--data", str(data), "--out", str(out), "--no-baselines", "--n-boot", "50", *extra])
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_evaluate_refuses_garbage(tmp_path, capsys):
    src = A.make_synthetic_run(tmp_path / "syn")
    data, good = src / "data" / "test.jsonl", (src / "predictions.jsonl").read_text().splitlines()
    f = tmp_path / "p.jsonl"
    cases = [("", r"no predictions \(an empty file\?\)"),
             ('{"id": "nope-1", "status": "ok", "fields": {}}\n{"id": "nope-2", "status": "ok", "fields": {}}\n', "none of the 2 ids"),
             (good[0] + "\n" + good[0] + "\n", r"line 2, field 'id': duplicate id"),
             (good[0] + "\n[1, 2, 3]\n", r"line 2: expected a JSON object .* got a JSON array"),
             (good[0] + "\n" + good[1][: len(good[1]) // 2] + "\n", r"line 2: malformed JSON")]
    for text, match in cases:
        f.write_text(text)
        rc, out, err = _evaluate(capsys, f, data, tmp_path / "out")
        assert rc == 2 and re.search(match, err) and not (tmp_path / "out").exists(), (text[:40], err)
        if "line 2" in match: assert f"{f}, line 2" in err           # the user's own file is named, not a copy


def test_evaluate_counts_and_shows_unmatched_predictions(tmp_path, capsys):
    src = A.make_synthetic_run(tmp_path / "syn")
    f = tmp_path / "p.jsonl"
    f.write_text((src / "predictions.jsonl").read_text() + '{"id": "stray-1", "status": "ok", "fields": {}}\n')
    rc, out, err = _evaluate(capsys, f, src / "data" / "test.jsonl", tmp_path / "out")
    assert rc == 0, err
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["unmatched_predictions"] == 1 and m["unmatched_ids"] == ["stray-1"] and m["matched"] == m["n"]
    assert "1 for no reference record, not scored (ids stray-1)" in out


def test_evaluate_never_overwrites_a_run_folder(tmp_path, capsys):
    run = A.make_synthetic_run(tmp_path / "runs" / "r")
    (run / "run.json").write_text(json.dumps({"status": "done", "steps": {}}))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    empty = tmp_path / "empty.jsonl"; empty.write_text("")
    other = tmp_path / "other.jsonl"; other.write_text((run / "predictions.jsonl").read_text().splitlines()[0] + "\n")
    for preds in (empty, other, run / "predictions.jsonl"):
        rc, out, err = _evaluate(capsys, preds, run / "data" / "test.jsonl", run)
        assert rc == 2 and "is a run folder" in err and "not overwritten" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    plain = tmp_path / "plain"; plain.mkdir(); (plain / "predictions.jsonl").write_text((run / "predictions.jsonl").read_text())
    rc, out, err = _evaluate(capsys, other, run / "data" / "test.jsonl", plain)   # a folder holding other predictions
    assert rc == 2 and "already holds other predictions" in err


def test_no_space_left_is_a_clear_message(tmp_path, capsys, monkeypatch):
    "A full disk ends in one line naming where it was writing, not an OSError traceback."
    import errno
    import emosum.inference as I
    monkeypatch.setattr(I, "load_for_inference", lambda cfg, adapter=None, **kw: (None, None))
    def full(*a, **kw): raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(I, "generate", full)
    rc = P.main(["predict", "--profile", "cpu-smoke", "--data", "data/sample_es.jsonl", "--out", str(tmp_path / "pred"), "--limit", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "no space left on the device" in err and str(tmp_path / "pred") in err and "Traceback" not in err


def test_non_finite_or_negative_settings_exit_2():
    from emosum.pipeline import main
    assert main(["run", "--profile", "cpu-smoke", "-p", "learning_rate=inf"]) == 2
    assert main(["run", "--profile", "cpu-smoke", "-p", "num_epochs=-3"]) == 2
