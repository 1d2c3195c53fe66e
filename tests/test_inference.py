"""Inference: batched == one-by-one greedy, continuous batching == the padded path, resume after an interruption,
resume keys, over-long input, submissions, adapters merged or not."""
import json, threading
import pytest
from emosum.config import load_model, load_tokenizer
from emosum.data import ES_FIELDS, Record, load_records, read_jsonl
from emosum.inference import (Summarizer, generate, generate_batch, generate_continuous, load_model_and_tokenizer, read_predictions,
                              write_submission, PREDICTION_KEYS, continuous_plan, continuous_blockers, generation_config, merge_choice,
                              padded_batch_size, adapter_sha256)
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
    with pytest.raises(ValueError, match=r"already holds 6 predictions made with other settings \(template: 'benchmark' -> 'strict_json'\)"):
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
    s = Summarizer.from_pretrained(TINY, adapter=tmp_path/"adapter", merge="no", max_length=1024, max_new_tokens=8)
    assert type(s.model).__name__.startswith("PeftModel") and s.model.emosum_load["merged"] is False
    out = s.generate_summary("Client, 30, anxious.", ["Session 1: CBT."], "It helped.")
    assert set(out) == set(ES_FIELDS) and s.last["adapter"] == str(tmp_path/"adapter") and s.last["status"] in ("ok", "repaired", "failed")
    m = Summarizer.from_pretrained(TINY, adapter=tmp_path/"adapter", max_length=1024, max_new_tokens=8)      # merge="auto"
    assert "Peft" not in type(m.model).__name__ and m.model.emosum_load["merged"] is True
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
    assert batched == single == generate_continuous(model, tok, prompts, max_new_tokens=24, max_concurrency=2)
    assert all(n <= 24 for _, n in batched) and all("<|im_start|>" not in t and "<|im_end|>" not in t for t, _ in batched)
    # the end-of-turn token stops generation: a trivial question gets a short answer
    from emosum.prompts import chat_text, encode
    ok = [encode(tok, chat_text([{"role": "user", "content": "Say OK."}], tok))]
    (text, n), = generate_batch(model, tok, ok, max_new_tokens=48)
    assert n < 48 and text and generate_continuous(model, tok, ok, max_new_tokens=48) == [(text, n)]   # both engines stop there


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


# --------------------------------------------------------------------------- continuous batching
def _varied_records(n=7):
    "Prompts of clearly different lengths, so requests join and leave the running batch at different steps."
    return [Record(id=f"r{i}", case_description=[f"Client {i}. " + "Worried about work and sleep. " * (3 * i + 1)],
                   consultation_process=[f"Session {j}: relaxation, CBT and homework." for j in range(i % 4 + 1)],
                   experience_and_reflection="Avoidance kept the fear alive.") for i in range(n)]


def test_continuous_equals_padded_record_for_record(tiny, tmp_path):
    "Greedy on the tiny model (CPU, fp32): the continuous engine's text is the padded path's, for every record, in the records' order."
    model, tok = tiny
    recs = _varied_records()
    kw = dict(max_length=2048, max_new_tokens=16, batch_size=3, progress=False)
    cont = generate(model, tok, recs, tmp_path/"c.jsonl", engine="continuous", **kw)
    pad = generate(model, tok, recs, tmp_path/"p.jsonl", engine="padded", **kw)
    assert [r["raw"] for r in cont] == [r["raw"] for r in pad] and [r["new_tokens"] for r in cont] == [r["new_tokens"] for r in pad]
    assert [r["id"] for r in cont] == [r.id for r in recs] and all(set(r) == set(PREDICTION_KEYS) for r in cont)
    assert {r["engine"]["name"] for r in cont} == {"continuous"} and {r["engine"]["name"] for r in pad} == {"padded"}
    assert cont[0]["engine"]["concurrency"] == 3 and cont[0]["key"] == pad[0]["key"]     # the engine is not part of the key
    assert generate(model, tok, recs, tmp_path/"d.jsonl", **kw)[0]["engine"]["name"] == "padded"   # auto on the CPU
    assert model.config._attn_implementation == "sdpa"                                       # restored after continuous batching


def test_continuous_sampling_stop_ids_and_plan(tiny, tmp_path):
    import torch
    model, tok = tiny
    prompts = [build_prompt(r, tok, max_length=2048, max_new_tokens=10).input_ids for r in _varied_records(4)]
    torch.manual_seed(0)
    sampled = generate_continuous(model, tok, prompts, max_new_tokens=10, do_sample=True, temperature=1.0, top_p=0.9)
    assert len(sampled) == 4 and all(isinstance(t, str) and 1 <= n <= 10 for t, n in sampled)
    assert [n for _, n in generate_continuous(model, tok, prompts, max_new_tokens=10, stop_ids=[])] == [10] * 4
    lens, ref = [len(p) for p in prompts], generate_batch(model, tok, prompts, max_new_tokens=10)
    plan = continuous_plan(model, lens, 10, max_concurrency=2)
    assert plan["layout"] == "contiguous" and plan["concurrency"] == 2 and plan["num_blocks"] == 2 and plan["block_size"] >= max(lens) + 10
    for layout in ("contiguous", "paged"):          # both cache layouts, 2 requests at a time: the padded path's greedy answers
        p = continuous_plan(model, lens, 10, max_concurrency=2, layout=layout)
        assert p["layout"] == layout and generate_continuous(model, tok, prompts, 10, plan=p) == ref
    with pytest.raises(MemoryError, match="longest prompt needs"):
        continuous_plan(model, [len(p) for p in prompts], 10, memory_fraction=1e-12)
    assert padded_batch_size(model, [len(p) for p in prompts], 10, upper=3) == 3               # the CPU: the profile's batch size
    # a repetition penalty (Qwen2-7B-Instruct's generation_config sets 1.05) is applied per request: the unpadded padded path's answers
    assert continuous_blockers(model, generation_config(model, tok, 10, repetition_penalty=1.5)) == []
    assert (generate_continuous(model, tok, prompts, 10, max_concurrency=2, repetition_penalty=1.5)
            == [generate_batch(model, tok, [p], 10, repetition_penalty=1.5)[0] for p in prompts])
    # ... also when a long prompt is prefilled in pieces (steps where no request gets a token: this failed on a GPU)
    assert (generate_continuous(model, tok, prompts[:2], 10, max_concurrency=2, repetition_penalty=1.5, cb_options={"max_batch_tokens": 64})
            == [generate_batch(model, tok, [p], 10, repetition_penalty=1.5)[0] for p in prompts[:2]])
    assert continuous_blockers(model, generation_config(model, tok, 10, no_repeat_ngram_size=3)) == ["NoRepeatNGramLogitsProcessor"]
    with pytest.raises(ValueError, match="cannot apply.*NoRepeatNGram"):
        generate_continuous(model, tok, prompts, max_new_tokens=4, no_repeat_ngram_size=3)
    with pytest.raises(ValueError, match="engine='continuous' cannot apply"):
        generate(model, tok, _varied_records(2), tmp_path/"p.jsonl", engine="continuous", gen_kwargs={"no_repeat_ngram_size": 3}, progress=False)


def test_continuous_resume_after_interruption(tiny, tmp_path):
    "An interrupted continuous run keeps the rows it appended, stops its engine thread, and the rerun generates only the rest."
    model, tok = tiny
    recs, out, seen = _varied_records(6), tmp_path/"predictions.jsonl", []
    threads = threading.active_count()

    def crash_after_2(row):
        seen.append(row["id"])
        if len(seen) == 2: raise KeyboardInterrupt("simulated crash")

    kw = dict(max_length=2048, max_new_tokens=8, batch_size=2, progress=False, engine="continuous")
    with pytest.raises(KeyboardInterrupt):
        generate(model, tok, recs, out, on_row=crash_after_2, **kw)
    assert len(read_predictions(out)) == 2 and threading.active_count() == threads and model.config._attn_implementation == "sdpa"
    again = []
    rows = generate(model, tok, recs, out, on_row=lambda r: again.append(r["id"]), **kw)
    assert sorted(again) == sorted({r.id for r in recs} - set(seen)) and [r["id"] for r in rows] == [r.id for r in recs]
    assert [r["raw"] for r in rows] == [r["raw"] for r in generate(model, tok, recs, tmp_path/"p.jsonl", **{**kw, "engine": "padded"})]


# --------------------------------------------------------------------------- resume keys
def _adapter(path, seed):
    import torch
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    get_peft_model(load_model(TINY), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(path)
    return path


def test_resume_key_mismatch_is_an_error(tmp_path):
    "`emosum run --steps 03-04 -p learning_rate=...` after an earlier run: a new adapter must not reuse the old adapter's predictions."
    a1, a2 = _adapter(tmp_path/"a1", 1), _adapter(tmp_path/"a2", 2)
    assert adapter_sha256(a1) != adapter_sha256(a2) and adapter_sha256(a1) == adapter_sha256(a1) and adapter_sha256(None) is None
    recs, out = _records(3), tmp_path/"predictions.jsonl"
    kw = dict(max_length=1024, max_new_tokens=6, progress=False, model_name=TINY)
    m1, tok = load_model_and_tokenizer(TINY, a1)
    first = generate(m1, tok, recs, out, adapter=a1, **kw)
    assert first[0]["key"]["adapter_sha256"] == adapter_sha256(a1) and first[0]["engine"]["merged"] is True
    assert generate(m1, tok, recs, out, adapter=a1, **kw) == first                          # same key: everything reused
    m2, _ = load_model_and_tokenizer(TINY, a2)
    with pytest.raises(ValueError, match=r"(?s)already holds 3 predictions made with other settings \(adapter_sha256: .*overwrite=True"):
        generate(m2, tok, recs, out, adapter=a2, **kw)
    by_id = lambda rows: sorted(rows, key=lambda r: r["id"])
    assert by_id(read_predictions(out)) == first                                             # the error changed nothing
    fresh = generate(m2, tok, recs, out, adapter=a2, overwrite="stale", **kw)               # what the pipeline's run cell passes
    assert all(r["key"]["adapter_sha256"] == adapter_sha256(a2) for r in read_predictions(out)) and len(read_predictions(out)) == 3
    assert by_id(read_predictions(tmp_path/"predictions.replaced.jsonl")) == first          # the old rows are set aside, not lost
    again = generate(m2, tok, recs, out, adapter=a2, overwrite=True, **kw)                  # a fresh start, the same greedy answers
    assert [r["raw"] for r in again] == [r["raw"] for r in fresh] and len(read_predictions(out)) == 3
    with pytest.raises(ValueError, match="max_new_tokens: 6 -> 5"):
        generate(m2, tok, recs, out, adapter=a2, **{**kw, "max_new_tokens": 5})
    with pytest.raises(ValueError, match="generation:"):
        generate(m2, tok, recs, out, adapter=a2, do_sample=True, **kw)
    legacy = tmp_path/"legacy.jsonl"                                                         # rows written before keys existed
    legacy.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("key", "engine")}) + "\n" for r in fresh))
    with pytest.raises(ValueError, match="no resume key"):
        generate(m2, tok, recs, legacy, adapter=a2, **kw)
    with pytest.raises(ValueError, match="overwrite must be"):
        generate(m2, tok, recs, out, adapter=a2, overwrite="yes", **kw)


# --------------------------------------------------------------------------- merged or not
def _nf4():
    "The tiny model loaded 4-bit the way a profile with quantization='nf4' loads it (fp32 compute, CPU)."
    return load_model(TINY, quantization="nf4", compute_dtype="float32", device_map="cpu")


def test_merge_decision_is_recorded(tmp_path):
    pytest.importorskip("bitsandbytes")
    import torch
    from peft import PeftModel
    a = _adapter(tmp_path/"adapter", 3)
    tok = load_tokenizer(TINY)
    merged, _ = load_model_and_tokenizer(TINY, a)
    unmerged, _ = load_model_and_tokenizer(TINY, a, merge="no")
    assert merged.emosum_load["merged"] and "unquantised base" in merged.emosum_load["why"]
    assert not unmerged.emosum_load["merged"] and "merge=no" in unmerged.emosum_load["why"]
    recs = _records(2)
    rows = generate(unmerged, tok, recs, tmp_path/"u.jsonl", max_length=1024, max_new_tokens=8, progress=False, adapter=a)
    assert rows[0]["engine"]["merged"] is False and rows[0]["engine"]["weights"] == "float32"
    assert [r["raw"] for r in rows] == [r["raw"] for r in generate(merged, tok, recs, tmp_path/"m.jsonl", max_length=1024, max_new_tokens=8,
                                                                        progress=False, adapter=a, engine="continuous")]
    # a 4-bit base: off a GPU the adapter stays unmerged; merge="yes" merges into a de-quantised copy, with the same answers
    q = _nf4()
    ok, why = merge_choice(q, "auto")
    assert not ok and "off the GPU" in why
    ok, why = merge_choice(q, "yes")
    assert ok and "de-quantised" in why
    prompts = [build_prompt(r, tok, max_length=1024, max_new_tokens=8).input_ids for r in recs]
    on_4bit = generate_batch(PeftModel.from_pretrained(q, str(a)).eval(), tok, prompts, 8)
    copy = _nf4().dequantize(torch.float32)                      # transformers' de-quantisation, as the loader uses it
    assert not any("Linear4bit" in type(m).__name__ for m in copy.modules())
    assert generate_batch(PeftModel.from_pretrained(copy, str(a)).merge_and_unload().eval(), tok, prompts, 8) == on_4bit
    loaded, _ = load_model_and_tokenizer(TINY, a, quantization="nf4", compute_dtype="float32", device_map="cpu", merge="yes")
    assert loaded.emosum_load["merged"] and loaded.emosum_load["weights"] == "float32 (de-quantised nf4)"
    assert generate_batch(loaded, tok, prompts, 8) == on_4bit                       # the loader's merge path gives the same answers


# --- constrained JSON decoding (issue 13 §3) --------------------------------------------------------------------------

def _five_fields(text):
    try: obj = json.loads(text)
    except ValueError: return False
    return isinstance(obj, dict) and list(obj) == list(ES_FIELDS) and all(isinstance(v, str) for v in obj.values())


@pytest.mark.parametrize("do_sample", [False, True])
def test_constrained_answers_of_a_random_model_are_always_the_five_fields(tiny, tmp_path, do_sample):
    import torch
    model, tok = tiny
    recs, kw = _records(5), dict(max_length=1024, max_new_tokens=64, batch_size=3, progress=False, do_sample=do_sample, temperature=1.0)
    torch.manual_seed(0)
    free = generate(model, tok, recs, tmp_path/"free.jsonl", **kw)
    torch.manual_seed(0)
    rows = generate(model, tok, recs, tmp_path/"json.jsonl", constrained=True, **kw)
    assert not any(_five_fields(r["raw"]) for r in free) and not any(r["constrained"] for r in free)
    assert all(_five_fields(r["raw"]) and r["status"] == "ok" and r["constrained"] for r in rows)          # 100% valid
    assert all(set(r) == set(PREDICTION_KEYS) and r["new_tokens"] <= 64 for r in rows)
    assert sorted(read_predictions(tmp_path/"json.jsonl"), key=lambda r: r["id"]) == rows                 # as written to the file


def test_constrained_answer_ends_at_the_end_of_turn_token(tiny):
    "Given room, the answer closes the object and then the end-of-turn token ends it (fewer tokens than the budget)."
    from emosum.inference import json_constraint
    from emosum.prompts import end_of_turn_ids
    model, tok = tiny
    prompts = [build_prompt(r, tok, max_length=1024, max_new_tokens=200).input_ids for r in _records(3)]
    c = json_constraint(tok, model.config.vocab_size, max_new_tokens=200)
    outs = generate_batch(model, tok, prompts, 200, constraint=c)
    assert all(_five_fields(t) and n <= 200 for t, n in outs)
    stop = end_of_turn_ids(tok)
    import torch
    ids = tok.pad({"input_ids": prompts}, padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        from transformers import LogitsProcessorList
        from emosum.inference import JsonLogitsProcessor
        out = model.generate(**ids, max_new_tokens=200, do_sample=False, eos_token_id=stop, pad_token_id=tok.pad_token_id,
                             logits_processor=LogitsProcessorList([JsonLogitsProcessor(c, 200)]))
    ends = [next((row[i] for i in range(len(row)) if row[i] in stop), None) for row in out[:, ids["input_ids"].shape[1]:].tolist()]
    assert all(e in stop for e in ends)                                        # every row ended with a stop token, not the budget


def test_constrained_masks_on_llguidance_threads_equal_the_row_by_row_ones_at_every_step(tiny):
    "A sampled, seeded batch: at every step the processor on llguidance's thread pool masks exactly as the row-by-row"
    "one, with finished rows (both stop tokens allowed, as llguidance's own mask for them) beside unfinished ones."
    import torch
    from transformers import LogitsProcessorList
    from emosum.inference import JsonLogitsProcessor, json_constraint, _ll_executor, _llguidance
    model, tok = tiny
    prompts = [build_prompt(r, tok, max_length=1024, max_new_tokens=80).input_ids for r in _records(2) for _ in range(4)]
    c = json_constraint(tok, model.config.vocab_size, stop_ids=[2, 0], max_new_tokens=80)   # <|im_end|>, <|endoftext|>
    par, ser, seen = JsonLogitsProcessor(c, 80, threads=2), JsonLogitsProcessor(c, 80, threads=1), []
    assert _ll_executor(_llguidance(), 2) is _ll_executor(_llguidance(), 2)          # one pool a process (and size)

    def closers_sooner(ids, scores):    # a random model never closes a string: here each field ends at a random step
        scores[:, c["closers"]] += 5.0; return scores

    def both(ids, scores):
        a, b = par(ids, scores.clone()), ser(ids, scores.clone())
        assert torch.equal(a, b)                                                     # the same -inf, to the bit
        seen.append(sum(m.is_stopped() for m in par.m)); return a

    ids = tok.pad({"input_ids": prompts}, padding=True, padding_side="left", return_tensors="pt")
    torch.manual_seed(0)
    with torch.no_grad():
        model.generate(**ids, max_new_tokens=80, do_sample=True, temperature=1.0, top_p=1.0, pad_token_id=tok.pad_token_id,
                       eos_token_id=c["stop"], logits_processor=LogitsProcessorList([closers_sooner, both]))
    assert len(seen) > 20 and any(0 < s < len(prompts) for s in seen)              # steps with rows done and rows going
    assert par.text == ser.text and all(_five_fields(t) for t in par.text)
    assert len(set(par.text)) == len(prompts)                                      # sampled: every row its own answer


def test_constraint_batch_bench_walks_both_paths_to_the_same_tokens(tmp_path):
    "bench/constraint_batch.py's dry run: the row-by-row and the thread-pool processor, timed on the same seeded walk."
    import importlib.util
    from emosum.config import project_path
    spec = importlib.util.spec_from_file_location("constraint_batch", project_path("bench/constraint_batch.py"))
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    import emosum.inference as inf
    real = inf._consume_last, inf._next_token_bitmask
    out = bench.main(["--tiny", "--out", str(tmp_path / "r.json")])
    assert (inf._consume_last, inf._next_token_bitmask) == real                     # the timers are gone again
    assert json.loads((tmp_path / "r.json").read_text())["runs"] == out["runs"] and [r["batch"] for r in out["runs"]] == [4, 8]
    for r in out["runs"]:
        assert r["same_tokens"] and r["threads"] >= 2 and r["serial"]["steps"] == r["parallel"]["steps"] > 20
        assert r["serial"]["parsed"] == r["parallel"]["parsed"] == r["batch"]             # every walk a closed object
        assert all(r[p][k] > 0 for p in ("serial", "parallel") for k in ("mask_ms_per_step", "consume_ms_per_step"))


def test_constrained_option_flows_from_the_profile_to_the_rows(tiny, tmp_path):
    from emosum.config import load_profile
    from emosum.inference import profile_generate_kwargs
    model, tok = tiny
    cfg = load_profile("cpu-smoke", constrained_json="true", max_new_tokens=60)
    assert cfg.constrained_json is True and load_profile("default").constrained_json is False
    kw = {**profile_generate_kwargs(cfg), "progress": False}
    assert kw["constrained"] is True
    rows = generate(model, tok, _records(3), tmp_path/"p.jsonl", **kw)
    assert all(r["constrained"] and r["key"]["generation"]["constrained_json"] and r["status"] == "ok" for r in rows)
    with pytest.raises(ValueError, match="other settings.*generation"):            # never mixed with unconstrained rows
        generate(model, tok, _records(3), tmp_path/"p.jsonl", **{**kw, "constrained": False})
    s = Summarizer(model, tok, model_name=cfg.model, **{k: kw[k] for k in ("max_length", "max_new_tokens", "constrained")})
    fields = s.generate_summary("Client, 30, anxious at work.", ["Session 1: CBT."])
    assert list(fields) == list(ES_FIELDS) and s.last["constrained"] and s.last["status"] == "ok"
    rows = s.summarize(_records(2), tmp_path/"s.jsonl", progress=False)
    assert all(r["constrained"] and r["status"] == "ok" for r in rows)


def test_constrained_generation_uses_the_padded_engine_and_says_so(tiny, tmp_path, monkeypatch):
    import emosum.inference as inf
    model, tok = tiny
    monkeypatch.setattr(inf, "choose_engine", lambda m, e="auto": "continuous")        # as on a GPU
    rows = generate(model, tok, _records(2), tmp_path/"e.jsonl", max_length=1024, max_new_tokens=60, progress=False, constrained=True)
    assert all(r["engine"]["name"] == "padded" and "constrained JSON decoding runs on the padded path" in r["engine"]["why"] for r in rows)
    with pytest.raises(ValueError, match="engine='continuous' cannot keep answers to a JSON schema"):
        generate(model, tok, _records(2), tmp_path/"e2.jsonl", max_length=1024, max_new_tokens=60, progress=False, constrained=True,
                 engine="continuous")


def test_constrained_bad_input_is_named(tiny, tmp_path, monkeypatch):
    import sys
    from emosum.config import Profile
    model, tok = tiny
    with pytest.raises(ValueError, match="task must be es with constrained_json"): Profile(task="reflection", constrained_json=True)
    with pytest.raises(ValueError, match="task='reflection' answers in free text"):
        generate(model, tok, _records(1), tmp_path/"r.jsonl", task="reflection", max_length=1024, max_new_tokens=60, constrained=True)
    with pytest.raises(ValueError, match="max_new_tokens=10 cannot hold a constrained answer"):
        generate(model, tok, _records(1), tmp_path/"b.jsonl", max_length=1024, max_new_tokens=10, constrained=True)
    monkeypatch.setitem(sys.modules, "llguidance", None)                             # the library missing: which extra to install
    with pytest.raises(ImportError, match=r"needs llguidance.*pip install -e '\.\[constrained\]'"):
        generate(model, tok, _records(1), tmp_path/"m.jsonl", max_length=1024, max_new_tokens=60, constrained=True)
    assert not (tmp_path/"m.jsonl").exists() and not (tmp_path/"b.jsonl").exists()     # nothing written before the error


def test_continuous_plan_on_a_small_card_takes_fewer_tokens_per_pass(tiny, monkeypatch):
    "Where a full-size forward pass leaves no room for the cache (a 12 GiB card, 7B shape), the plan shrinks the pass instead of failing."
    import emosum.inference as inf
    model, _ = tiny
    lens, kv, act = [900, 700, 500], inf.kv_bytes_per_token(model), inf._act_bytes_per_token(model)
    need = (max(lens) + 10) * (kv + 2 * 512)           # the longest request's cache at the smallest pass, attention-mask term included
    monkeypatch.setattr(inf, "_free_memory", lambda dev: int((512 * act + 1.5 * need) / 0.9))
    plan = continuous_plan(model, lens, 10, layout="contiguous")
    assert plan["max_batch_tokens"] == 512 and plan["concurrency"] == 1
    with pytest.raises(MemoryError, match="longest prompt needs"):           # one size asked for: no shrinking
        continuous_plan(model, lens, 10, layout="contiguous", max_batch_tokens=1024)
    monkeypatch.setattr(inf, "_free_memory", lambda dev: 2**40)               # plenty: the biggest pass, every request at once
    assert continuous_plan(model, lens, 10)["max_batch_tokens"] == 1024 and continuous_plan(model, lens, 10)["concurrency"] == 3


# --------------------------------------------------------------------------- minimum Bayes risk over sampled answers
def _answer(**fields):
    return json.dumps({f: fields.get(f, "") for f in ES_FIELDS})


def test_mbr_choice_keeps_per_field_the_value_closest_to_the_others():
    from emosum.inference import mbr_choice
    answers = [_answer(causes="stress at work", symptoms="poor sleep", treatment_effect="calmer"),
               _answer(causes="stress at work and a divorce", symptoms="poor sleep and worry", treatment_effect="calmer now"),
               "not an answer at all",
               _answer(causes="a divorce", symptoms="worry", treatment_effect="calmer, sleeping again")]
    parsed, info = mbr_choice(answers)
    # answer 1 shares words with both 0 and 3 on causes and symptoms; every filled treatment_effect shares "calmer"
    assert parsed.fields["causes"] == "stress at work and a divorce" and parsed.fields["symptoms"] == "poor sleep and worry"
    assert info["chosen"]["causes"] == info["chosen"]["symptoms"] == 1 and info["raw_from"] == 1
    assert info["parsed"] == 3 and info["statuses"][2] == "failed" and info["samples"] == 4 and parsed.status == "ok"
    assert parsed.fields["treatment_process"] == "" and set(parsed.fields) == set(ES_FIELDS)
    # a field chosen from an answer that needed repair makes the row "repaired"
    repaired = "Here you go: " + _answer(causes="stress at work and a divorce", symptoms="worry")
    p2, i2 = mbr_choice([_answer(causes="stress at work"), repaired, _answer(causes="a divorce")])
    assert i2["chosen"]["causes"] == 1 and i2["statuses"][1] == "repaired" and p2.status == "repaired" and p2.error
    # nothing parsed: a failed result saying so; Chinese is tokenised by words; reflections are chosen the same way
    failed, fi = mbr_choice(["no", "nope"])
    assert failed.fields is None and failed.status == "failed" and "none of the 2" in failed.error and fi["chosen"] == {}
    zh = [_answer(causes="工作压力"), _answer(causes="工作压力和家庭矛盾"), _answer(causes="家庭矛盾")]
    assert mbr_choice(zh, language="zh")[0].fields["causes"] == "工作压力和家庭矛盾"
    refl = mbr_choice(["I learnt to listen.", "I learnt to listen and to wait.", "Waiting helped."], task="reflection")[0]
    assert refl.fields == {"experience_and_reflection": "I learnt to listen and to wait."}
    # other utilities: by words answer 0 shares the most with the other two; by bigrams it ties answer 1, the earlier wins
    bi = [_answer(causes="stress at work"), _answer(causes="stress at work and a divorce"), _answer(causes="work, stress")]
    assert mbr_choice(bi, utility="rouge1")[1]["chosen"]["causes"] == 0 and mbr_choice(bi, utility="rouge2")[1]["chosen"]["causes"] == 0
    with pytest.raises(ValueError, match="utility must be one of"):
        mbr_choice(bi, utility="meteor")


def test_agreement_is_rouge_f1_scored_once_per_pair(monkeypatch):
    import emosum.evaluation as ev
    from rapidfuzz.distance import LCSseq
    from emosum.evaluation import _rouge_tokens
    from emosum.inference import _pair_rouge, agreement
    a, b = "poor sleep and worry about work", "worry and poor sleep"
    want = {u: ev.rouge(a, b)[u] for u in ("rougeL", "rouge1", "rouge2")}
    assert want["rougeL"] != ev.rouge(a, a)["rougeL"]                       # the two texts differ, so the check can fail
    _pair_rouge.cache_clear(); _rouge_tokens.cache_clear()
    calls, real = [], LCSseq.similarity
    monkeypatch.setattr(LCSseq, "similarity", lambda x, y: calls.append((x, y)) or real(x, y))
    assert agreement(a, b) == agreement(b, a) == want["rougeL"] and agreement(b, a, utility="rouge2") == want["rouge2"]
    assert len(calls) == 1                                                  # both orders, all utilities: one scoring
    assert {u: agreement(b, a, utility=u) for u in want} == want            # F1 is symmetric: the same either way


def test_mbr_agreement_equals_rouge_and_tokenizes_each_text_once(monkeypatch):
    "MBR's fast path (cached tokens) gives `rouge`'s numbers exactly, in English and Chinese, empty and odd values too."
    import itertools
    import emosum.evaluation as ev
    from emosum.evaluation import _rouge_tokens
    from emosum.inference import _agreements, _pair_rouge, agreement
    en = ["Poor sleep; worries about work.", "worrying about working, and sleeping poorly", "CBT: 8 sessions.",
          "...", "", "  ", "sleep sleep sleep", "Relaxation training (progressive muscle relaxation) and sleep hygiene."]
    zh = ["失眠，担心工作", "担心工作和失眠", "认知行为疗法", "。。", ""]
    for lang, vals in (("en", en), ("zh", zh)):
        for x, y in itertools.product(vals, repeat=2):
            for u in ("rougeL", "rouge1", "rouge2"):
                assert agreement(x, y, lang, u) == ev.rouge(x, y, lang)[u], (lang, x, y, u)
    assert len({agreement(x, y) for x, y in itertools.combinations(en, 2)}) > 3   # not all zero: the check can fail
    _pair_rouge.cache_clear(); _rouge_tokens.cache_clear()
    scorer = ev._rouge_scorer("en")
    seen, real = [], scorer._tokenizer.tokenize
    monkeypatch.setattr(scorer._tokenizer, "tokenize", lambda t: seen.append(t) or real(t))
    vals = [v for v in en if v.strip()]
    _agreements(vals, "en", "rougeL")
    assert sorted(seen) == sorted(vals)                                     # n texts, n tokenizations (not n(n-1))


def test_agreement_totals_from_one_table_are_the_pair_loops_to_the_last_bit():
    "MBR's ROUGE-L totals (`_agreements`: one LCS table, `rouge_l_matrix`) equal summing `agreement` pair by pair, bit for bit."
    import random
    from emosum.inference import _agreements, agreement
    rng = random.Random(3)
    words = "sleep worry work family panic therapy anxiety mother school exam night fear calm sessions".split()
    vals = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 150))) for _ in range(30)]
    vals += [vals[0], vals[5], "Calm.", "calm"]                             # equal texts, and equal tokens in other texts
    for lang in ("en", "zh"):
        loop = [0.0] * len(vals)
        for a in range(len(vals)):
            for b in range(a + 1, len(vals)):
                s = agreement(vals[a], vals[b], lang); loop[a] += s; loop[b] += s
        assert _agreements(vals, lang, "rougeL") == loop, lang
    assert len({round(t, 9) for t in loop}) > 20                            # varied totals: the check can fail
    assert _agreements(["calm"], "en", "rougeL") == [0.0] and _agreements([], "en", "rougeL") == []


def test_mbr_choice_by_semantic_agreement_and_by_the_sum(monkeypatch):
    "utility=semsim sums embedding cosines; rougeL+semsim adds them to ROUGE-L; both use chapter 05's embed."
    import numpy as np
    import emosum.evaluation as ev
    from emosum.inference import mbr_choice
    causes = ["stress at work", "stress at work and home", "burnout", "exhaustion"]
    # hand-made unit vectors: "burnout" and "exhaustion" are the same idea, the two "stress" values point elsewhere
    vec = {"stress at work": [1, 0], "stress at work and home": [0.6, 0.8], "burnout": [0, 1], "exhaustion": [0, 1]}
    seen = []
    monkeypatch.setattr(ev, "embed", lambda texts, model=None: seen.append(list(texts)) or np.array([vec[t] for t in texts], float))
    answers = [_answer(causes=c) for c in causes]
    pick = lambda u: mbr_choice(answers, utility=u)[0].fields["causes"]
    assert pick("rougeL") == "stress at work" and seen == []                 # ROUGE alone: the two that share words
    # cosine sums: 0.6, 2.2, 1.8, 1.8: the value between both ideas
    assert pick("semsim") == "stress at work and home" and seen[0] == causes
    # sum: ROUGE-L (0.75 between the two stress values, 0 elsewhere) + cosine: 1.35, 2.95, 1.8, 1.8
    assert pick("rougeL+semsim") == "stress at work and home"
    vec.update({"stress at work and home": [1, 0]})                          # now the stress values agree in meaning too
    assert pick("rougeL+semsim") == "stress at work" and pick("semsim") == "stress at work"   # ties: the earlier answer


def test_mbr_utility_weighs_the_cosine(monkeypatch):
    "rougeL+W*semsim adds W times the cosine totals to the ROUGE-L totals: W = 1 is rougeL+semsim exactly; W moves the choice."
    import numpy as np
    import emosum.evaluation as ev
    from emosum.config import Profile
    from emosum.inference import _agreements, check_utility, mbr_choice
    from emosum.vocab import mbr_utility_parts
    causes = ["stress at work", "stress at work and home", "stress and burnout", "burnout", "exhaustion"]
    # ROUGE-L totals 1.08, 1.25, 1.33, 0.5, 0: "stress and burnout" shares the most words. Hand-made unit vectors:
    # the two work values point one way, "burnout" and "exhaustion" mostly the other; cosine totals 2.2, 2.2, 1.6, 3, 3
    vec = {"stress at work": [1, 0], "stress at work and home": [1, 0], "stress and burnout": [0, 1],
           "burnout": [0.6, 0.8], "exhaustion": [0.6, 0.8]}
    monkeypatch.setattr(ev, "embed", lambda texts, model=None: np.array([vec[t] for t in texts], float))
    rl, cos = _agreements(causes, "en", "rougeL"), _agreements(causes, "en", "semsim")
    assert _agreements(causes, "en", "rougeL+1*semsim") == _agreements(causes, "en", "rougeL+semsim")
    for w in (0.25, 0.5, 3.0):
        assert _agreements(causes, "en", f"rougeL+{w}*semsim") == [a + w * b for a, b in zip(rl, cos)]
    pick = lambda u: mbr_choice([_answer(causes=c) for c in causes], utility=u)[0].fields["causes"]
    assert pick("rougeL") == pick("rougeL+0.1*semsim") == "stress and burnout"     # a little cosine: the words decide
    assert pick("rougeL+0.5*semsim") == "stress at work and home"                    # more: words and meaning together
    assert pick("rougeL+3*semsim") == "burnout"                                      # much more: the meaning decides
    from emosum.experiments import _chosen_fields                                   # chapter 08's choosers take them too
    assert _chosen_fields([_answer(causes=c) for c in causes], "es", "en", "rougeL+3*semsim")["causes"] == "burnout"
    assert mbr_utility_parts("rougeL+0.25*semsim") == ("rougeL", 0.25) and mbr_utility_parts("rouge1+semsim") == ("rouge1", 1.0)
    assert mbr_utility_parts("semsim") == (None, 1.0) and mbr_utility_parts("rouge2") == ("rouge2", 0.0)
    for bad in ("rougeL+0*semsim", "rougeL+-1*semsim", "semsim+rougeL", "rougeL+w*semsim", "bleu+semsim", ""):
        with pytest.raises(ValueError, match="with a weight W > 0"): check_utility(bad)
        with pytest.raises(ValueError, match="mbr_utility must be one of .* or rougeL\\+W\\*semsim"):
            Profile(name="x", do_sample=True, mbr_samples=4, mbr_utility=bad)
    assert Profile(name="x", do_sample=True, mbr_samples=4, mbr_utility="rougeL+0.25*semsim").mbr_utility == "rougeL+0.25*semsim"


def test_equal_utilities_share_one_spelling_and_one_resume_key():
    "Spellings of the same utility canonicalise to one, so a resumed run or pool keeps the rows; other weights do not."
    from emosum.inference import prediction_key
    from emosum.vocab import canonical_utility, mbr_utility_parts
    spelt = {"rougeL+1*semsim": "rougeL+semsim", "rougeL+1.0*semsim": "rougeL+semsim", "rougeL+semsim": "rougeL+semsim",
             "rougeL+0.250*semsim": "rougeL+0.25*semsim", "rougeL+.25*semsim": "rougeL+0.25*semsim",
             "rouge1+2.*semsim": "rouge1+2*semsim", "rougeL+100*semsim": "rougeL+100*semsim",
             "rougeL+0.0000001*semsim": "rougeL+0.0000001*semsim", "semsim": "semsim", "rouge2": "rouge2"}
    assert {u: canonical_utility(u) for u in spelt} == spelt
    assert all(mbr_utility_parts(canonical_utility(u)) == mbr_utility_parts(u) for u in spelt)   # the same utility
    with pytest.raises(ValueError, match="with a weight W > 0"): canonical_utility("rougeL+0*semsim")
    key = lambda u, n=4: prediction_key("m", None, "es", "default", 64, 16, "en", True, 0.7, 0.9, mbr_samples=n, mbr_utility=u)
    assert key("rougeL+1*semsim") == key("rougeL+semsim") and key("rougeL+0.250*semsim") == key("rougeL+.25*semsim")
    assert key("rougeL+0.25*semsim") != key("rougeL+0.3*semsim") != key("rougeL")
    assert key("rougeL+0.250*semsim")["generation"]["mbr_utility"] == "rougeL+0.25*semsim"
    assert "mbr_utility" not in key("rougeL")["generation"] and "mbr_utility" not in key("semsim", n=1)["generation"]


@pytest.mark.parametrize("engine", ["padded", "continuous"])
def test_generate_with_mbr_samples_writes_one_chosen_row_per_record(tiny, tmp_path, engine):
    import torch
    from emosum.inference import mbr_choice
    model, tok = tiny
    recs, out, n = _varied_records(3), tmp_path/"mbr.jsonl", 3
    kw = dict(max_length=2048, max_new_tokens=12, batch_size=4, progress=False, engine=engine, do_sample=True, temperature=1.0)
    torch.manual_seed(0)
    rows = generate(model, tok, recs, out, mbr_samples=n, **kw)
    assert [r["id"] for r in rows] == [r.id for r in recs] and len(read_predictions(out)) == 3
    for r in rows:
        m = r["mbr"]
        assert len(m["answers"]) == n and m["samples"] == n and r["key"]["generation"]["mbr_samples"] == n
        assert r["engine"]["name"] == engine and 1 <= r["new_tokens"] <= n * 12 and set(r) == set(PREDICTION_KEYS)
        again, info = mbr_choice(m["answers"])                          # the row is the choice over its own samples
        assert (again.fields, again.status) == (r["fields"], r["status"]) and info["chosen"] == m["chosen"]
    assert len({a for r in rows for a in r["mbr"]["answers"]}) > 3      # sampled: the answers differ
    seen = []                                                             # resumed: nothing generated again
    generate(model, tok, recs, out, mbr_samples=n, on_row=lambda r: seen.append(r), **kw)
    assert seen == []
    with pytest.raises(ValueError, match="other settings.*generation"):  # another sample count is another key
        generate(model, tok, recs, out, mbr_samples=2, **kw)
    with pytest.raises(ValueError, match="> 1 with do_sample=True"):
        generate(model, tok, recs, tmp_path/"g.jsonl", mbr_samples=2, **{**kw, "do_sample": False})


def test_summarizer_and_profile_take_mbr_samples(tiny):
    import torch
    from emosum.config import Profile
    model, tok = tiny
    with pytest.raises(ValueError, match="mbr_samples must be 1 unless do_sample"):
        Profile(name="x", mbr_samples=4)
    cfg = Profile(name="x", do_sample=True, mbr_samples=4)
    s = Summarizer(model, tok, max_length=1024, max_new_tokens=10, do_sample=True, mbr_samples=3)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="none of the 3 sampled answers parsed"):   # the tiny random model writes no JSON
        s.generate_summary("Client, 30, anxious about work.", "Session 1: CBT.")
    assert s.last["mbr"]["samples"] == 3 and len(s.last["mbr"]["answers"]) == 3 and s.last["new_tokens"] <= 30
    with pytest.raises(ValueError, match="> 1 with do_sample=True"):
        Summarizer(model, tok, mbr_samples=3)
    from emosum.inference import _summarizer_settings, prediction_key, profile_generate_kwargs
    assert _summarizer_settings(cfg)["mbr_samples"] == 4 and profile_generate_kwargs(cfg)["mbr_samples"] == 4
    # the utility: a profile key, validated, passed on, and part of the resume key only when it is not the default
    with pytest.raises(ValueError, match="mbr_utility must be one of"):
        Profile(name="x", do_sample=True, mbr_samples=4, mbr_utility="bleu")
    with pytest.raises(ValueError, match="mbr_utility must be one of"):
        Summarizer(model, tok, do_sample=True, mbr_samples=3, mbr_utility="bleu")
    sem = Profile(name="x", do_sample=True, mbr_samples=4, mbr_utility="rougeL+semsim")
    assert _summarizer_settings(sem)["mbr_utility"] == profile_generate_kwargs(sem)["mbr_utility"] == "rougeL+semsim"
    key = lambda u: prediction_key("m", None, "es", "benchmark", 1024, 10, "en", True, 0.7, 0.9, mbr_samples=4, mbr_utility=u)
    assert "mbr_utility" not in key("rougeL")["generation"] and key("semsim")["generation"]["mbr_utility"] == "semsim"


def test_sampled_generation_is_repeatable_with_a_seed(tiny, tmp_path):
    "generate(seed=...) seeds torch before sampling: the same samples (and so the same MBR choice) on a rerun, others without it."
    import torch
    model, tok = tiny
    recs = _records(2)
    kw = dict(max_length=1024, max_new_tokens=10, batch_size=4, progress=False, engine="padded", do_sample=True,
              temperature=1.0, mbr_samples=3)
    a = generate(model, tok, recs, tmp_path/"a.jsonl", seed=7, **kw)
    torch.manual_seed(123)                                           # whatever state torch is in before
    b = generate(model, tok, recs, tmp_path/"b.jsonl", seed=7, **kw)
    assert [r["mbr"]["answers"] for r in a] == [r["mbr"]["answers"] for r in b]
    c = generate(model, tok, recs, tmp_path/"c.jsonl", seed=8, **kw)
    assert [r["mbr"]["answers"] for r in a] != [r["mbr"]["answers"] for r in c]


def test_mbr_prefix_sharing_bench_measures_both_layouts_and_counts_shared_prompt_tokens(tmp_path):
    "bench/mbr_prefix_sharing.py's dry run: each layout x concurrency measured on the same prompts; only the paged layout"
    "takes prompt tokens from shared blocks (transformers' counter, which the script wraps: a transformers upgrade that"
    "moves it fails here, not on a GPU lease)."
    import importlib.util, json
    from emosum.config import project_path
    spec = importlib.util.spec_from_file_location("mbr_prefix_sharing", project_path("bench/mbr_prefix_sharing.py"))
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    from transformers.generation.continuous_batching.cache import PagedAttentionCache
    real = PagedAttentionCache.search_prefix_match
    bench.main(["--tiny", "--cpu", "--samples", "2", "--concurrency", "2,4", "--out", str(tmp_path / "r.json")])
    assert PagedAttentionCache.search_prefix_match is real                 # the wrapper is gone again
    from emosum.config import load_tokenizer
    ps = bench.prompts_for(project_path("data/sample_es.jsonl"), load_tokenizer("embedded:tiny-qwen2"), 2, 3, 1024, 8)
    assert len(ps) == 6 and ps[0] == ps[1] == ps[2] != ps[3] == ps[4] == ps[5]   # two records' prompts, side by side
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    got = {(r["layout"], r["max_concurrency"]): r for r in runs if "layout" in r}
    assert set(got) == {(l, c) for l in ("contiguous", "paged") for c in (2, 4)}
    assert all(r["new_tokens"] > 0 and r["prompts"] == 4 and "error" not in r for r in got.values())
    assert all(got["contiguous", c]["shared_prompt_tokens"] == 0 < got["paged", c]["shared_prompt_tokens"] for c in (2, 4))
    assert set(runs[-1]["speedup_over_first"]) == {"contiguous@4", "paged@2", "paged@4"}


def test_padded_batch_size_pays_the_vocabulary_once_a_row_when_generate_keeps_only_the_last_logits(tiny, monkeypatch):
    """On a GPU a padded call takes as many rows as free memory holds: each row's KV cache, its prompt's activations and
    P x P prefill mask, and its logits: once a row for a model that takes `logits_to_keep` (transformers' generate then
    asks for the last position only), once a prompt token for one that does not."""
    import types
    import emosum.inference as inf
    model, _ = tiny
    assert model._supports_logits_to_keep()                           # the Qwen2 class: generate computes the last logits only
    kv, act, act_logits = inf.kv_bytes_per_token(model), inf._act_bytes_per_token(model, logits=False), inf._act_bytes_per_token(model)
    assert act_logits > act
    P, new = 900, 100
    row = (P + new) * kv + P * act + P * P + 16 * model.config.vocab_size
    gpu = lambda last: types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"), config=model.config, dtype=model.dtype,
                                             _supports_logits_to_keep=lambda: last)
    free = int(12.5 * row / 0.9)
    monkeypatch.setattr(inf, "_free_memory", lambda dev: free)                        # room for 12 rows and a half
    monkeypatch.setattr(inf, "_hf_model", lambda m: gpu(True))
    assert inf.padded_batch_size(model, [P, 500, 300], new, upper=256) == 12          # the longest prompt sets every row's size
    assert inf.padded_batch_size(model, [P], new, upper=8) == 8                      # never more than gen_batch_size
    monkeypatch.setattr(inf, "_hf_model", lambda m: gpu(False))                      # every prompt token's logits: fewer rows
    assert inf.padded_batch_size(model, [P], new, upper=256) == int(free * 0.9 // ((P + new) * kv + P * act_logits + P * P)) < 12
