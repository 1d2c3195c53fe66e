"""Inference: batched == one-by-one greedy, resume after an interruption, over-long input, submissions, adapters."""
import json
import pytest
from emosum.config import load_model, load_tokenizer
from emosum.data import ES_FIELDS, Record, load_records, read_jsonl
from emosum.inference import (Summarizer, generate, generate_batch, load_model_and_tokenizer, read_predictions,
                              write_submission, PREDICTION_KEYS)
from emosum.prompts import BudgetError, build_prompt

TINY = "embedded:tiny-qwen2"
SMOL = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tiny():
    return load_model_and_tokenizer(TINY)


@pytest.fixture(autouse=True)
def one_thread():
    "torch on one thread: several times faster than two on a shared 2-core machine for this small model."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _records(n=6):
    return [Record(id=i, case_description=[f"Client {i}, " + "aged 30, anxious about work. " * (i % 3 + 1)],
                   consultation_process=[f"Session {j}: relaxation and CBT." for j in range(i % 4 + 1)],
                   experience_and_reflection="Avoidance kept the fear alive.") for i in range(n)]


def test_batched_greedy_equals_one_by_one(tiny, tmp_path):
    model, tok = tiny
    recs = _records(5)
    batched = generate(model, tok, recs, tmp_path/"b.jsonl", max_length=1024, max_new_tokens=12, batch_size=4, progress=False)
    single = generate(model, tok, recs, tmp_path/"s.jsonl", max_length=1024, max_new_tokens=12, batch_size=1, progress=False)
    assert [r["raw"] for r in batched] == [r["raw"] for r in single]
    assert [r["id"] for r in batched] == [r.id for r in recs]               # returned in the records' order
    assert all(set(r) == set(PREDICTION_KEYS) for r in batched)


def test_resume_after_interruption(tiny, tmp_path):
    model, tok = tiny
    recs, out, seen = _records(6), tmp_path/"predictions.jsonl", []

    def crash_after_3(row):
        seen.append(row["id"])
        if len(seen) == 3: raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        generate(model, tok, recs, out, max_length=1024, max_new_tokens=6, batch_size=1, progress=False, on_row=crash_after_3)
    assert len(read_predictions(out)) == 3
    with open(out, "a") as f: f.write('{"id": 99, "task": "es", "stat')     # a line cut short by the crash
    again = []
    with pytest.warns(UserWarning, match="incomplete last line"):
        rows = generate(model, tok, recs, out, max_length=1024, max_new_tokens=6, batch_size=2, progress=False, on_row=lambda r: again.append(r["id"]))
    assert sorted(again) == sorted(set(r.id for r in recs) - set(seen))     # only the rest was generated
    ids = [r["id"] for r in read_predictions(out)]
    assert sorted(ids) == [r.id for r in recs] and len(rows) == 6
    with pytest.raises(ValueError, match="already holds predictions"):
        generate(model, tok, recs, out, template="strict_json", max_length=1024, max_new_tokens=6, progress=False)


def test_over_long_record_is_an_error_row_not_dropped(tiny, tmp_path):
    model, tok = tiny
    recs = _records(2) + [Record(id="huge", case_description=["A very long case description. " * 500], consultation_process=["x"])]
    rows = generate(model, tok, recs, tmp_path/"p.jsonl", max_length=1024, max_new_tokens=8, progress=False)
    huge = rows[-1]
    assert huge["id"] == "huge" and huge["status"] == "error" and "case description alone" in huge["error"] and huge["fields"] is None
    assert {r["status"] for r in rows[:2]} <= {"ok", "repaired", "failed"}
    summ = write_submission(rows, tmp_path/"sub.jsonl", "cloudcom")
    sub = read_jsonl(tmp_path/"sub.jsonl")
    assert summ["n"] == 3 and summ["status_counts"]["error"] == 1 and summ["empty"] >= 1
    assert sub[-1] == {"id": "huge", "predicted_cause": "", "predicted_symptoms": "", "predicted_treatment_process": "",
                       "predicted_illness_Characteristics": "", "predicted_treatment_effect": ""}


def test_chinese_record_and_generate_kwargs(tiny, tmp_path):
    model, tok = tiny
    recs = load_records("data/sample_zh.jsonl")
    rows = generate(model, tok, recs, tmp_path/"zh.jsonl", max_length=2048, max_new_tokens=6, progress=False,
                    gen_kwargs={"repetition_penalty": 1.3})
    assert len(rows) == len(recs) and all(r["status"] in ("ok", "repaired", "failed", "error") for r in rows)
    from emosum.prompts import build_prompt
    assert "案例描述" in build_prompt(recs[0], tok, max_length=8192).text


def test_submission_formats(tmp_path):
    f = {k: k.upper() for k in ES_FIELDS}
    preds = [dict(id=1, status="ok", fields=f), dict(id=2, status="failed", fields=None, raw="nonsense")]
    s = write_submission(preds, tmp_path/"a.jsonl", "longemotion", ids=[1, 2, 3])
    rows = read_jsonl(tmp_path/"a.jsonl")
    assert rows[0] == {"id": 1, **f} and rows[1] == {"id": 2, **{k: "" for k in ES_FIELDS}} and rows[2]["id"] == 3
    assert s == {"n": 3, "empty": 2, "missing": 1, "status_counts": {"ok": 1, "failed": 1, "missing": 1}}
    write_submission(preds, tmp_path/"c.jsonl", "cloudcom")
    assert read_jsonl(tmp_path/"c.jsonl")[0] == {"id": 1, "predicted_cause": "CAUSES", "predicted_symptoms": "SYMPTOMS",
        "predicted_treatment_process": "TREATMENT_PROCESS", "predicted_illness_Characteristics": "CHARACTERISTICS_OF_ILLNESS",
        "predicted_treatment_effect": "TREATMENT_EFFECT"}
    with pytest.raises(ValueError, match="format must be one of"): write_submission(preds, tmp_path/"x.jsonl", "csv")


def test_summarizer_with_lora_adapter_and_merged(tmp_path):
    from peft import LoraConfig, get_peft_model
    base = load_model(TINY)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path/"adapter")
    load_tokenizer(TINY).save_pretrained(tmp_path/"adapter")
    s = Summarizer.from_pretrained(TINY, adapter=tmp_path/"adapter", max_length=1024, max_new_tokens=8)
    assert type(s.model).__name__.startswith("PeftModel")
    out = s.generate_summary("Client, 30, anxious.", ["Session 1: CBT."], "It helped.")
    assert set(out) == set(ES_FIELDS) and s.last["adapter"] == str(tmp_path/"adapter") and s.last["status"] in ("ok", "repaired", "failed")
    m = Summarizer.from_pretrained(TINY, adapter=tmp_path/"adapter", merge=True, max_length=1024, max_new_tokens=8)
    assert "Peft" not in type(m.model).__name__
    m.generate_summary("Client, 30, anxious.", ["Session 1: CBT."], "It helped.")
    assert m.last["raw"] == s.last["raw"]                                   # merged == adapter on top, greedy
    with pytest.raises(BudgetError, match="case description alone"):
        s.generate_summary("Long. " * 2000, ["Session 1."])
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        Summarizer.from_pretrained(TINY, adapter=tmp_path)


def test_smollm2_batched_equals_single_and_stops(tmp_path):
    model, tok = load_model_and_tokenizer(SMOL)
    recs = _records(3)                                           # short prompts keep this test fast on 2 CPU cores
    prompts = [build_prompt(r, tok, "es", "strict_json", max_length=2048, max_new_tokens=24).input_ids for r in recs]
    assert len({len(p) for p in prompts}) > 1                    # different lengths: left padding is exercised
    batched = generate_batch(model, tok, prompts, max_new_tokens=24)
    single = [generate_batch(model, tok, [p], max_new_tokens=24)[0] for p in prompts]
    assert batched == single
    assert all(n <= 24 for _, n in batched) and all("<|im_start|>" not in t and "<|im_end|>" not in t for t, _ in batched)
    # the end-of-turn token stops generation: a trivial question gets a short answer
    from emosum.prompts import chat_text, encode
    (text, n), = generate_batch(model, tok, [encode(tok, chat_text([{"role": "user", "content": "Say OK."}], tok))], max_new_tokens=48)
    assert n < 48 and text


@pytest.mark.slow
def test_summarizer_from_gguf_file(tmp_path):
    "A .gguf file as the base (transformers de-quantises it on load; ~30 s on 2 cores)."
    from emosum.config import smollm2_gguf
    s = Summarizer.from_pretrained(str(smollm2_gguf()), template="one_shot", max_length=2048, max_new_tokens=8,
                                   gen_kwargs={"repetition_penalty": 1.1})
    out = s.generate_summary("Client, 30, anxious about exams.", ["Session 1: assessment.", "Session 2: relaxation."], "Worked well.")
    assert set(out) == set(ES_FIELDS) and 1 <= s.last["new_tokens"] <= 8
    rows = s.summarize(_records(2), tmp_path/"p.jsonl", batch_size=2, progress=False)
    assert [r["id"] for r in rows] == [0, 1]
