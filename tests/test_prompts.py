"""Prompts: templates, chat formatting, the token budget, training examples, and parsing messy model output."""
import copy, json
import pytest
from emosum.config import load_tokenizer
from emosum.data import ES_FIELDS, Record, load_records
from emosum.prompts import (TEMPLATES, BudgetError, ChatTemplateError, OMISSION_MARKER, build_example, build_messages, build_prompt,
                            end_of_turn, normalize_key, parse_summary, target_text, template_names)

GOOD = {"causes": "work stress", "symptoms": "insomnia", "treatment_process": "CBT; relaxation",
        "characteristics_of_illness": "chronic worry", "treatment_effect": "sleeps better"}
J = json.dumps(GOOD)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded:tiny-qwen2")


def _rec(n_sessions=3, n_refl=2, cd="Client, female, 30, teacher.", **kw):
    return Record(id=kw.pop("id", "r1"), case_description=[cd],
                  consultation_process=[f"Session {i}: " + "we talked about work and sleep. " * 6 for i in range(n_sessions)],
                  experience_and_reflection="\n".join(f"Reflection {i}: " + "avoidance kept the fear alive. " * 5 for i in range(n_refl)),
                  **GOOD, **kw)


@pytest.mark.parametrize("text,status,want", [
    (J, "ok", GOOD),
    (f"```json\n{J}\n```", "ok", GOOD),
    (f"```\n{J}\n```", "ok", GOOD),
    (f"Here is the summary:\n```json\n{J}\n```\nHope it helps.", "repaired", GOOD),
    (f"Summary: {J} -- end", "repaired", GOOD),
    (J[:-1] + ", }", "repaired", GOOD),                                   # trailing comma
    (str(GOOD), "repaired", GOOD),                                        # single quotes
    (J[:-1], "repaired", GOOD),                                           # missing closing brace
    (J[:-1] + ",", "repaired", GOOD),                                     # cut after a comma
    (J[:-2], "repaired", GOOD),                                           # cut before the closing quote
    (J[:-4], "repaired", {**GOOD, "treatment_effect": "sleeps bett"}),   # cut inside a string
    (json.dumps({"cause": "work stress", "Symptoms": "insomnia", "treatment process": "CBT; relaxation",
                 "illness characteristics": "chronic worry", "Treatment_Effect": "sleeps better"}), "repaired", GOOD),
    (json.dumps({"病因": "work stress", "症状": "insomnia", "治疗过程": "CBT; relaxation", "疾病特点": "chronic worry", "治疗效果": "sleeps better"},
                ensure_ascii=False), "repaired", GOOD),
    (json.dumps({**GOOD, "treatment_process": ["CBT", "relaxation"]}), "repaired", {**GOOD, "treatment_process": "CBT; relaxation"}),
    (json.dumps({**GOOD, "extra": "x"}), "repaired", GOOD),
    ('```json\n{"causes": ["stress", "loss", "lonel', "repaired", {"causes": "stress; loss; lonel", **{f: "" for f in ES_FIELDS[1:]}}),
    ('{"causes": "work stress", "symptoms":', "repaired", {"causes": "work stress", **{f: "" for f in ES_FIELDS[1:]}}),
    ('{"causes": "work stress", "sympt', "repaired", {"causes": "work stress", **{f: "" for f in ES_FIELDS[1:]}}),
    (json.dumps({"causes": "work stress"}), "repaired", {f: GOOD["causes"] if f == "causes" else "" for f in ES_FIELDS}),
    (J.replace('"symptoms"', '\n"symptoms"').replace(', \n', '\n'), "repaired", GOOD),   # missing comma between lines
    ("Causes: work stress\nSymptoms: insomnia\nTreatment process: CBT; relaxation\n"
     "Characteristics of the illness: chronic worry\nTreatment effect: sleeps better", "repaired", GOOD),
    ("**Causes**: work stress\n**Symptoms**: insomnia\n**Treatment process**: CBT; relaxation\n"
     "**Characteristics of illness**: chronic worry\n**Treatment effect**: sleeps better", "repaired", GOOD),
    ("<think>hmm</think>\n" + J, "ok", GOOD),
    ("", "failed", None),
    ("I'm sorry, I can't help with that.", "failed", None),
    ('{"colour": "blue", "size": 3}', "failed", None),
    ("{{{{", "failed", None),
])
def test_parse_messy_outputs(text, status, want):
    r = parse_summary(text)
    assert r.status == status, r
    assert r.fields == want
    if status == "failed": assert r.error
    if status == "repaired": assert r.error   # says what was repaired


def test_parse_chinese_values_and_reflection():
    z = {"causes": "工作压力", "symptoms": "失眠、焦虑", "treatment_process": "认知行为疗法；放松训练", "characteristics_of_illness": "慢性担忧",
         "treatment_effect": "睡眠改善"}
    assert parse_summary(json.dumps(z, ensure_ascii=False)) .fields == z
    assert parse_summary("  text  ", task="reflection").fields == {"experience_and_reflection": "text"}
    assert parse_summary("", task="reflection").status == "failed"


def test_normalize_key():
    assert normalize_key("predicted_illness_Characteristics") == "characteristics_of_illness"
    assert normalize_key("Treatment Outcome") == "treatment_effect"
    assert normalize_key("name") is None


def test_registry_covers_tasks_and_languages():
    for name in ("benchmark", "strict_json", "fieldwise", "one_shot"):
        for task in ("es", "reflection"):
            for lang in ("en", "zh"):
                assert (name, task, lang) in TEMPLATES
    assert "LongEmotion" in TEMPLATES[("benchmark", "es", "en")].source
    with pytest.raises(KeyError, match="did you mean 'strict_json'"): build_messages(_rec(), template="strict_jsn")


def test_benchmark_prompt_structure():
    (m,) = build_messages(_rec())
    c = m["content"]
    for s in ("psychological counseling expert", "Case_description:", "Consultation_process:", "Experience_and_reflection:",
              "Characteristics of the illness:", "structured JSON format"):
        assert s in c
    assert c.index("Case_description: Client") < c.index("Consultation_process: Session 0") < c.index("Experience_and_reflection: Reflection 0")


def test_chinese_prompts_and_targets(tok):
    r = _rec(cd="来访者，女，30岁，教师。", language="zh")
    for name in template_names("es"):
        msgs = build_messages(r, template=name)
        assert "案例描述" in msgs[-1]["content"]
    assert "咨询过程" in build_messages(r, task="reflection")[-1]["content"]
    assert json.loads(target_text(r)) == GOOD
    ex = build_example(r, tok, task="es", template="fieldwise", max_length=4096)
    assert tok.decode(ex["input_ids"][-ex["target_tokens"]:]).endswith("<|im_end|>")


def test_no_chat_template_is_a_clear_error(tok):
    bare = copy.deepcopy(tok); bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"): build_prompt(_rec(), bare)


def test_budget_keeps_case_description_and_head_tail(tok):
    r = _rec(n_sessions=40, n_refl=20)
    p = build_prompt(r, tok, max_length=2048, max_new_tokens=256)
    assert p.fits and p.prompt_tokens == len(p.input_ids) <= 1792 and p.truncated_tokens > 0 and p.full_tokens > 1792
    assert "Client, female, 30, teacher." in p.text and OMISSION_MARKER["en"] in p.text
    assert "Session 0:" in p.text and "Session 39:" in p.text and "Session 20:" not in p.text
    assert "Reflection 0:" in p.text and "Reflection 19:" in p.text
    whole = build_prompt(r, tok, max_length=32768)
    assert whole.truncated_tokens == 0 and OMISSION_MARKER["en"] not in whole.text


def test_budget_one_long_paragraph_is_shortened_by_sentences(tok):
    r = Record(id="x", case_description=["Case."], consultation_process=[" ".join(f"Sentence {i} is here." for i in range(400))],
               experience_and_reflection=None, **GOOD)
    p = build_prompt(r, tok, max_length=1600, max_new_tokens=128)
    assert p.fits and p.kept["consultation_process"][1] == 400 and "Sentence 0 is here." in p.text and "Sentence 399 is here." in p.text and "Sentence 200 is here." not in p.text


def test_over_long_case_description_does_not_fit(tok):
    r = _rec(cd="The client's history. " * 400)
    p = build_prompt(r, tok, max_length=1024, max_new_tokens=128)
    assert not p.fits and "case description alone" in p.error and "Raise max_length" in p.error
    with pytest.raises(BudgetError, match="case description alone"): build_example(r, tok, max_length=1024)


def test_build_example_masks_prompt_and_ends_with_end_of_turn(tok):
    r = _rec()
    ex = build_example(r, tok, max_length=2048)
    unmasked = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l != -100]
    assert tok.decode(unmasked) == target_text(r) + end_of_turn(tok)
    assert ex["labels"][:ex["prompt_tokens"]] == [-100] * ex["prompt_tokens"]
    long = build_example(_rec(n_sessions=60, n_refl=30), tok, max_length=1500)
    assert len(long["input_ids"]) <= 1500 and long["truncated_tokens"] > 0
    assert tok.decode(long["input_ids"][-long["target_tokens"]:]) == target_text(r) + "<|im_end|>"   # the target is never cut


def test_smollm2_chat_format_and_sample_data():
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    assert end_of_turn(tok) == "<|im_end|>"
    recs = load_records("data/sample_es.jsonl")
    for r in recs:
        ex = build_example(r, tok, template="one_shot", max_length=8192)
        assert tok.decode(ex["input_ids"][-ex["target_tokens"]:]) == target_text(r) + "<|im_end|>"
        assert ex["truncated_tokens"] == 0
