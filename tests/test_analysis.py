"""emosum.analysis on hand-written run folders that follow the contract's schemas."""
import json
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from emosum import analysis as A
from emosum.evaluation import score_predictions

FIELDS = ("causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect")
INPUT = ("Mara, 41, a nurse, came because of exhaustion and insomnia after two years of night shifts and caring for her father. "
         "She reported crying spells, irritability and headaches. The counsellor used sleep hygiene, cognitive restructuring "
         "and assertiveness training over 8 sessions. Her sleep improved and she asked for day shifts.")
REF = {"causes": "Night shifts for two years and caring for her father.",
       "symptoms": "Exhaustion, insomnia, crying spells, irritability and headaches.",
       "treatment_process": "Eight sessions of sleep hygiene, cognitive restructuring and assertiveness training.",
       "characteristics_of_illness": "A stress and exhaustion reaction with sleep disturbance.",
       "treatment_effect": "Sleep improved and she asked for day shifts."}


def _write(rd: Path, preds: list[dict], scores: list[dict] | None = None, records=None, metrics=None):
    (rd / "data").mkdir(parents=True, exist_ok=True)
    records = records if records is not None else [
        {"id": p["id"], "case_description": [INPUT[:120]], "consultation_process": [INPUT[120:]],
         "experience_and_reflection": "The counsellor notes that boundaries mattered.", **REF, "language": "en"} for p in preds]
    (rd / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    full = [{"id": p.get("id"), "task": "es", "template": "benchmark", "model": "m", "adapter": None, "status": "ok",
             "fields": None, "raw": "", "prompt_tokens": 100, "truncated_tokens": 0, "new_tokens": 50, "seconds": 1.0,
             "error": None, **p} for p in preds]
    (rd / "predictions.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in full))
    if scores is None:   # scored as 05_evaluation scores a run (the packaged MiniLM for semsim)
        scores = score_predictions(full, records).to_dict("records")
    (rd / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
    (rd / "metrics.json").write_text(json.dumps(metrics or {"n": len(preds), "overall": {"rougeL": 0.5}}))
    return rd


def test_taxonomy_on_handwritten_predictions(tmp_path):
    good = dict(REF)
    rd = _write(tmp_path / "r", [
        {"id": 1, "fields": good},
        {"id": 2, "status": "failed", "fields": None, "raw": "I cannot help with that " * 6, "error": "no JSON object"},
        {"id": 3, "status": "repaired", "fields": {**good, "treatment_effect": "  "}},
        {"id": 4, "fields": {**good, "symptoms": INPUT[:400]}},
        {"id": 5, "fields": {**good, "treatment_process": "sleep hygiene and " * 10}},
        {"id": 6, "fields": {**good, "causes": "Night shifts since 2015 and conflict with her brother Tobias."}},
        {"id": 7, "fields": {**good, "characteristics_of_illness": "一种以失眠和疲惫为主的应激反应。"}},
        {"id": 8, "fields": {k: v for k, v in good.items() if k != "causes"}},
    ])
    run = A.load_run(rd)
    ft = A.failure_table(run)
    got = {(r.id, r.field, r.failure) for r in ft.itertuples()}
    assert ("2", "*", "invalid_json") in got and ("2", "*", "repetition_loop") in got
    assert ("3", "*", "repaired_json") in got and ("3", "treatment_effect", "empty_field") in got
    assert ("4", "symptoms", "copy_of_input") in got
    assert ("5", "treatment_process", "repetition_loop") in got
    assert ("6", "causes", "hallucinated_entity") in got
    assert "2015" in ft[(ft.id == "6")]["detail"].iloc[0] and "Tobias" in ft[(ft.id == "6")]["detail"].iloc[0]
    assert ("7", "characteristics_of_illness", "language_mismatch") in got
    assert ("8", "causes", "empty_field") in got
    assert not ft[ft.id == "1"].shape[0], ft[ft.id == "1"]           # the reference itself is not flagged
    fc = A.failure_counts(ft, len(run.predictions))
    assert fc.loc["invalid_json", "records"] == 1 and fc.loc["empty_field", "records"] == 2
    assert fc.loc["empty_field", "rate"] == 0.25


def test_chinese_record_language_and_copy(tmp_path):
    zh_in = "来访者女性三十岁因为工作压力和家庭矛盾感到焦虑失眠情绪低落咨询师采用认知行为疗法和放松训练经过六次咨询后情绪明显好转睡眠改善"
    rec = {"id": "z1", "case_description": [zh_in], "consultation_process": ["第一次咨询建立关系。"], "language": "zh",
           **{f: "工作压力" for f in FIELDS}}
    rd = _write(tmp_path / "zh", [{"id": "z1", "fields": {**{f: "工作压力和家庭矛盾" for f in FIELDS},
                                                          "symptoms": zh_in[:50], "causes": "The client was stressed at work."}}],
                records=[rec])
    ft = A.failure_table(A.load_run(rd))
    got = {(r.field, r.failure) for r in ft.itertuples()}
    assert ("symptoms", "copy_of_input") in got and ("causes", "language_mismatch") in got
    assert ("treatment_process", "language_mismatch") not in got


def test_load_run_errors_and_id_types(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"): A.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="predictions.jsonl is missing.*04_inference"): A.load_run(tmp_path / "empty")
    rd = _write(tmp_path / "ids", [{"id": 1, "fields": REF}, {"id": 2, "fields": REF}])
    with open(rd / "predictions.jsonl", "a") as f: f.write('{"id": 3, "sta')          # killed mid-write
    with pytest.warns(UserWarning, match="incomplete last line"): run = A.load_run(rd)
    assert list(run.predictions["id"]) == ["1", "2"] and set(run.records) == {"1", "2"}   # int ids in the files, str here
    t = A.score_table(run)
    assert len(t) == 10 and t["input_chars"].eq(len(A._input_text(run.records["1"]))).all()


def test_tables_and_plots(tmp_path):
    rd = A.make_synthetic_run(tmp_path / "ft", n=10, seed=3)
    run = A.load_run(rd)
    t = A.score_table(run)
    fs = A.field_stats(t, "semsim")
    assert list(fs.index) == [*FIELDS, "overall"] and fs["mean"].between(0, 1).all()
    assert A.length_buckets(t)["count"].sum() == 10
    for fig in (A.plot_field_distributions(t), A.plot_score_vs_length(t), A.plot_failures(A.failure_counts(A.failure_table(run), 10))):
        fig.savefig(tmp_path / "f.png"); assert (tmp_path / "f.png").stat().st_size > 1000
    w = A.worst_records(run, "rougeL", k=1, fields=["symptoms"])
    assert len(w) == 1 and w["rougeL"].iloc[0] == t[t.field == "symptoms"]["rougeL"].min()
    html = A.side_by_side_html(w)
    assert "<table>" in html and "input_excerpt" in html


def test_input_excerpt_finds_the_relevant_window():
    text = "x " * 500 + "the client suffered from insomnia and panic attacks on trains " + "y " * 500
    ex = A.input_excerpt(text, "insomnia and panic attacks", chars=120)
    assert "insomnia" in ex and ex.startswith("…") and ex.endswith("…")
    assert A.input_excerpt("short", "ref") == "short"


def test_compare_runs_paired_bootstrap(tmp_path):
    ids = [f"r{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 30)

    def run_with(name, vals, drop=()):
        preds = [{"id": i, "fields": REF} for i in ids if i not in drop]
        scores = [{"id": i, "field": f, "status": "ok", "rougeL": float(v), "semsim": float(v)}
                  for i, v in zip(ids, vals) if i not in drop for f in FIELDS]
        return _write(tmp_path / name, preds, scores)

    a = run_with("zero-shot", base)
    b = run_with("fine-tuned", base + 0.1 + rng.normal(0, 0.01, 30), drop=("r0", "r1"))
    c = run_with("same", base)
    cmp = A.compare_runs([a, b, c], metrics=["rougeL"], n_boot=500)
    assert set(cmp["run"]) == {"fine-tuned", "same"} and set(cmp["field"]) == {*FIELDS, "overall"}
    ft = cmp[(cmp.run == "fine-tuned") & (cmp.field == "overall")].iloc[0]
    assert ft["n"] == 28 and ft["delta"] == pytest.approx(0.1, abs=0.01) and ft["ci_low"] > 0.09 and ft["significant"]
    same = cmp[cmp.run == "same"]
    assert (same["delta"] == 0).all() and not same["significant"].any()
    assert cmp.attrs["unpaired"]["fine-tuned"] == 2
    txt = A.format_comparison(cmp)
    assert "fine-tuned vs zero-shot" in txt and "+0.10" in txt and "left out" in txt
    with pytest.raises(KeyError, match="no metric 'bertscore'"): A.compare_runs([a, b], metrics=["bertscore"])
    with pytest.raises(ValueError, match="at least two runs"): A.compare_runs([a])


def test_paired_bootstrap_ci_covers_the_truth():
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.1, 200); b = a + rng.normal(0.02, 0.05, 200)
    d, lo, hi = A.paired_bootstrap(a, b, n_boot=2000)
    assert lo < 0.02 < hi and lo < d < hi and hi - lo < 0.03


def test_everything_works_when_every_prediction_failed(tmp_path):
    "A tiny random model (cpu-smoke) produces no JSON at all: the analysis must still run and say so."
    rd = _write(tmp_path / "bad", [{"id": i, "status": "failed", "fields": None, "raw": "<|im_end|> tok tok", "error": "no JSON"}
                                   for i in range(4)] + [{"id": 9, "fields": REF}])
    # id 9 has no record in data/ (its input is unknown) -> NaN input length, no crash
    recs = [json.loads(l) for l in (rd / "data" / "test.jsonl").read_text().splitlines() if json.loads(l)["id"] != 9]
    (rd / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    run = A.load_run(rd)
    t = A.score_table(run)
    assert t.loc[t.id == "9", "input_chars"].isna().all() and (t.loc[t.id != "9", "rougeL"] == 0).all()
    assert A.field_stats(t).loc["overall", "zero_share"] == 0.8
    A.plot_field_distributions(t); A.plot_score_vs_length(t); A.length_buckets(t)
    w = A.worst_records(run, k=1)
    assert w["prediction"].str.startswith("[no field; raw output]").all()
    fc = A.failure_counts(A.failure_table(run), 5)
    assert fc.loc["invalid_json", "records"] == 4 and fc.loc["invalid_json", "rate"] == 0.8
    A.plot_failures(fc)
    assert A.failure_counts(A.failure_table(A.load_run(_write(tmp_path / "ok", [{"id": 1, "fields": REF}]))), 1).empty
