"""Bad-input tests for every loader of emosum.data, the split, round trips, the samples and the run's data."""
import json, random, warnings
from pathlib import Path
import pytest
from emosum.data import (ES_FIELDS, DataError, Record, RecordSet, detect_format, detect_language, load_records,
                         load_run_data, read_jsonl, split_records, write_jsonl)
from emosum.config import load_profile, project_root

ROOT = project_root()


def rec(i, **kw):
    "A valid LongEmotion-shaped record (fictional)."
    d = {"id": i, "case_description": [f"Client {i}, 30 years old, teacher, anxious about work."],
         "consultation_process": ["The counsellor listened and reflected.", "They practised slow breathing."],
         "experience_and_reflection": "Early rapport helped.", **{k: f"{k} of case {i}" for k in ES_FIELDS}}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not ...}


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l, ensure_ascii=False)) + "\n" for l in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------- LongEmotion JSONL

@pytest.fixture
def es_file(tmp_path):
    return write_lines(tmp_path / "es.jsonl", [rec(1), rec(2), "", rec(3)])


def test_longemotion_loads(es_file):
    rs = load_records(es_file)
    assert isinstance(rs, RecordSet) and rs.format == "longemotion" and [r.id for r in rs] == [1, 2, 3]
    assert rs[2].source == f"{es_file}:4" and rs[0].has_targets and rs[0].language == "en" and rs.problems == []


@pytest.mark.parametrize("bad, match", [
    ('{"id": 9, "case_description": ["x"],', r"line 2: malformed JSON"),
    (rec(9, consultation_process=...), r"line 2, field 'consultation_process': missing"),
    (rec(9, case_description="x" and 5), r"line 2, field 'case_description': must be a list of strings"),
    (rec(9, consultation_process=["ok", 3]), r"line 2, field 'consultation_process': paragraph 1 must be a string"),
    (rec(9, causes=12), r"line 2, field 'causes': must be a string, got int"),
    (rec(9, id=[1]), r"line 2, field 'id': must be an int or a str"),
    (rec(9, case_description=["  ", ""]), r"line 2, field 'case_description': has no text"),
    (rec(9, symptoms=""), r"line 2, field 'symptoms': is an empty string"),
    (rec(9, treatment_effect=...), r"line 2, field 'treatment_effect': missing while causes"),
    (rec(1), r"line 2, field 'id': duplicate id 1 \(first at .*es.jsonl:1\)"),
    ('[1, 2]', r"line 2: expected a JSON object"),
])
def test_longemotion_bad_input(tmp_path, bad, match):
    p = write_lines(tmp_path / "es.jsonl", [rec(1), bad, rec(3)])
    with pytest.raises(DataError, match=match) as e:
        load_records(p)
    assert str(p) in str(e.value) and e.value.line == 2
    with pytest.warns(UserWarning, match=r"skipped 1 bad record\(s\), kept 2"):
        rs = load_records(p, strict=False)
    assert [r.id for r in rs] == [1, 3] and len(rs.problems) == 1
    assert rs.problems[0]["file"] == str(p) and rs.problems[0]["line"] == 2 and rs.problems[0]["message"]


def test_longemotion_strict_false_report(tmp_path):
    p = write_lines(tmp_path / "es.jsonl", [rec(1), "{oops", rec(2, symptoms=""), rec(3), rec(3), rec(4, case_description=...)])
    with pytest.warns(UserWarning, match=r"skipped 4 bad"):
        rs = load_records(p, strict=False)
    assert [r.id for r in rs] == [1, 3]
    assert [(q["line"], q["field"]) for q in rs.problems] == [(2, None), (3, "symptoms"), (5, "id"), (6, "case_description")]


def test_no_good_records_is_an_error(tmp_path):
    p = write_lines(tmp_path / "es.jsonl", ["{oops"])
    with pytest.raises(DataError, match=r"no valid records \(1 bad\).*malformed JSON"):
        load_records(p, strict=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_records(tmp_path / "missing.jsonl")


def test_records_without_targets_and_json_array(tmp_path):
    rows = [{k: v for k, v in rec(i).items() if k not in ES_FIELDS} for i in (1, 2)]
    p = tmp_path / "test.json"; p.write_text(json.dumps(rows, indent=2))
    rs = load_records(p)
    assert rs.format == "longemotion" and not any(r.has_targets for r in rs) and rs[1].source.endswith(":13")


# ---------------------------------------------------------------- folder (train/ validation/ test/)

@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "ds"
    write_lines(d / "train" / "part1.jsonl", [rec(1), rec(2), rec(3)])
    (d / "train" / "part2.json").write_text(json.dumps([rec(4), rec(5)], indent=1))
    (d / "validation" / "one.json").parent.mkdir(parents=True)
    (d / "validation" / "one.json").write_text(json.dumps(rec(6), indent=1))
    write_lines(d / "test" / "test.jsonl", [{k: v for k, v in rec(7).items() if k not in ES_FIELDS}])
    return d


def test_folder_loads_with_splits(folder):
    rs = load_records(folder)
    assert rs.format == "folder" == detect_format(folder)
    assert {r.id: r.split for r in rs} == {1: "train", 2: "train", 3: "train", 4: "train", 5: "train", 6: "validation", 7: "test"}
    assert not rs[-1].has_targets


@pytest.mark.parametrize("where, content, match", [
    ("train/part2.json", "[\n" + json.dumps(rec(4)) + ',\n {"id": 5,,}\n]', r"part2.json, line 3: malformed JSON"),
    ("train/part2.json", json.dumps([rec(4), rec(5, consultation_process=...)], indent=1), r"part2.json, line \d+, field 'consultation_process': missing"),
    ("train/part2.json", json.dumps([rec(4), rec(5, experience_and_reflection=["a"])]), r"part2.json, line 1, field 'experience_and_reflection': must be a string"),
    ("validation/one.json", json.dumps(rec(6, causes=" ")), r"one.json, line 1, field 'causes': is an empty string"),
    ("validation/one.json", json.dumps(rec(2)), r"one.json, line 1, field 'id': duplicate id 2 \(first at .*part1.jsonl:2\)"),
])
def test_folder_bad_input(folder, where, content, match):
    (folder / where).write_text(content)
    with pytest.raises(DataError, match=match):
        load_records(folder)
    with pytest.warns(UserWarning, match="skipped"):
        rs = load_records(folder, strict=False)
    assert len(rs.problems) >= 1 and all(q["file"].endswith(Path(where).name) for q in rs.problems)
    assert {1, 2, 3, 7} <= {r.id for r in rs}


def test_folder_run_data_keeps_its_split(folder, tmp_path):
    cfg = load_profile("cpu-smoke", data_path=str(folder))
    parts = load_run_data(cfg, tmp_path / "run")
    assert [r.id for r in parts["train"]] == [1, 2, 3, 4, 5] and [r.id for r in parts["valid"]] == [6] and [r.id for r in parts["test"]] == [7]
    assert load_run_data(cfg, tmp_path / "run") == parts


# ---------------------------------------------------------------- PsyQA (our own tiny fictional fixture in its shape)

PSYQA = [
    {"questionID": 101, "question": "总是担心考试失败，怎么办？", "description": "我是高三学生，最近一到考试就心慌、睡不着。",
     "keywords": "焦虑,考试,失眠",
     "answers": [{"answer_text": "你好，考前紧张是很常见的。可以试着把担心写下来，并练习放松呼吸。", "has_label": False, "labels_sequence": []},
                 {"answer_text": "先肯定自己的努力，再和老师、家人聊聊你的压力。", "has_label": False}]},
    {"questionID": 102, "question": "和室友关系紧张", "description": "",
     "keywords": ["人际关系", "宿舍"], "answers": [{"answer_text": "可以找一个合适的时间，平静地说出你的感受。"}]},
    {"questionID": 103, "question": "失恋后走不出来", "description": "分手三个月了，还是每天想起他。", "keywords": "情感",
     "answers": [{"answer_text": "失去一段关系会带来哀伤，允许自己难过，也要照顾好作息。"}]},
]


def psyqa_file(tmp_path, items):
    p = tmp_path / "psyqa.json"; p.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    return p


def line_of(path, needle, nth=1):
    "1-based line of the nth line of `path` that equals `needle` once stripped."
    hits = [i for i, l in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if l.strip() == needle]
    return hits[nth - 1]


def test_psyqa_loads(tmp_path):
    p = psyqa_file(tmp_path, PSYQA)
    assert detect_format(p) == "psyqa"
    rs = load_records(p)
    assert rs.format == "psyqa" and [r.id for r in rs] == [101, 102, 103]
    r = rs[0]
    assert r.case_description == ["总是担心考试失败，怎么办？", "我是高三学生，最近一到考试就心慌、睡不着。", "关键词：焦虑,考试,失眠"]
    assert len(r.consultation_process) == 2 and r.language == "zh" and not r.has_targets and r.experience_and_reflection is None
    assert rs[1].case_description == ["和室友关系紧张", "关键词：人际关系，宿舍"]


def _psyqa_bad(i, **kw):
    items = json.loads(json.dumps(PSYQA)); items[i].update(kw)
    return items


@pytest.mark.parametrize("items, match", [
    (_psyqa_bad(1, question=None), r"field 'question': missing"),
    (_psyqa_bad(1, question=["q"]), r"field 'question': must be a string"),
    (_psyqa_bad(1, question="  "), r"field 'question': is empty"),
    (_psyqa_bad(1, answers="just a string"), r"field 'answers': must be a non-empty list"),
    (_psyqa_bad(1, answers=[{"answer_text": ""}]), r"field 'answers': answer 0 is empty"),
    (_psyqa_bad(1, answers=[{"text": "x"}]), r"field 'answers': answer 0 needs an answer_text string"),
    (_psyqa_bad(1, keywords=7), r"field 'keywords': must be a string or a list"),
    (_psyqa_bad(1, questionID=101), r"field 'id': duplicate id 101"),
])
def test_psyqa_bad_input(tmp_path, items, match):
    p = psyqa_file(tmp_path, items)
    with pytest.raises(DataError, match=match) as e:
        load_records(p, format="psyqa")
    start = line_of(p, "{", nth=2 + 2)          # the second item's "{" (the first item's answers hold two more)
    assert e.value.file == str(p) and e.value.line == start
    with pytest.warns(UserWarning, match="skipped 1 bad"):
        rs = load_records(p, format="psyqa", strict=False)
    assert [r.id for r in rs] == [101, 103] and rs.problems[0]["line"] == start


def test_psyqa_malformed_json(tmp_path):
    p = tmp_path / "psyqa.json"
    p.write_text(json.dumps(PSYQA, ensure_ascii=False, indent=2).replace('"questionID": 102,', '"questionID": 102', 1), encoding="utf-8")
    bad = line_of(p, '"questionID": 102') + 1   # the missing comma is noticed on the next line
    with pytest.raises(DataError, match=rf"psyqa.json, line {bad}: malformed JSON"):
        load_records(p, format="psyqa")
    with pytest.warns(UserWarning, match="skipped 1 bad"):
        rs = load_records(p, format="psyqa", strict=False)   # the items before the break are kept, the break is reported
    assert [r.id for r in rs] == [101] and rs.problems[0]["line"] == bad


# ---------------------------------------------------------------- CPsyCoun dialogues (.txt)

DIALOGUE = "来访者：我最近总是失眠，白天没有精神。\n\n心理咨询师：这种情况持续多久了？\n\n来访者：大概一个月，\n从换工作开始。\n\n心理咨询师：我们一起看看压力来自哪里。\n"


@pytest.fixture
def dialogues(tmp_path):
    d = tmp_path / "dlg"; d.mkdir()
    for i in (1, 2, 10): (d / f"case_{i}.txt").write_text(DIALOGUE, encoding="utf-8")
    return d


def test_cpsycoun_loads(dialogues):
    rs = load_records(dialogues)
    assert rs.format == "cpsycoun" and [r.id for r in rs] == ["case_1", "case_2", "case_10"]
    r = rs[0]
    assert r.case_description == ["我最近总是失眠，白天没有精神。"] and r.language == "zh" and not r.has_targets
    assert r.consultation_process[2] == "来访者：大概一个月，\n从换工作开始。" and len(r.consultation_process) == 4
    one = load_records(dialogues / "case_2.txt")
    assert [x.id for x in one] == ["case_2"] and one.format == "cpsycoun"


@pytest.mark.parametrize("text, match", [
    ("你好，我想咨询。\n来访者：我很焦虑。\n", r"case_2.txt, line 1, field 'turn': text before the first turn"),
    ("来访者：我很焦虑。\n\n心理咨询师：\n来访者：嗯。\n", r"case_2.txt, line 3, field 'turn': empty 心理咨询师 turn"),
    ("心理咨询师：你好，请坐。\n", r"case_2.txt, field 'turn': no 来访者 \(client\) turn"),
    ("\n\n", r"case_2.txt, field 'turn': no dialogue turns"),
    (b"\xff\xfe\x00bad", r"case_2.txt: not UTF-8 text"),
])
def test_cpsycoun_bad_input(dialogues, text, match):
    f = dialogues / "case_2.txt"
    f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(DataError, match=match):
        load_records(dialogues)
    with pytest.warns(UserWarning, match="skipped 1 bad"):
        rs = load_records(dialogues, strict=False)
    assert [r.id for r in rs] == ["case_1", "case_10"] and rs.problems[0]["file"] == str(f)


def test_cpsycoun_duplicate_id(tmp_path, dialogues):
    # ids are file names: the same file given twice in a folder layout is a duplicate
    d = tmp_path / "two"; write_lines(d / "a.jsonl", [rec("case_1"), rec("case_1")])
    with pytest.raises(DataError, match=r"field 'id': duplicate id 'case_1'"):
        load_records(d)


def test_cpsycoun_real_dialogues(shared_data):
    rs = load_records(shared_data / "cpsycoun_dialogues")
    assert len(rs) == 40 and all(r.language == "zh" and r.consultation_process[0].startswith("来访者：") for r in rs)


# ---------------------------------------------------------------- split, round trip, language

def _records(n):
    return [Record.from_dict(rec(i)) for i in range(n)]


def test_split_is_deterministic_and_order_independent():
    rs = _records(100)
    tr, va = split_records(rs, seed=42)
    assert (len(tr), len(va)) == (85, 15) and {r.id for r in tr}.isdisjoint({r.id for r in va})
    assert split_records(rs, seed=42) == (tr, va)
    shuffled = rs[:]; random.Random(0).shuffle(shuffled)
    assert {r.id for r in split_records(shuffled, seed=42)[1]} == {r.id for r in va}
    assert {r.id for r in split_records(rs, seed=7)[1]} != {r.id for r in va}
    assert [len(p) for p in split_records(rs, valid_frac=0.2)] == [80, 20]
    with pytest.raises(ValueError, match="valid_frac"):
        split_records(rs, valid_frac=1.0)


def test_round_trip(tmp_path):
    rs = _records(3) + [Record.from_dict({"id": "zh-1", "case_description": ["来访者，女，20岁。"], "consultation_process": ["咨询师倾听。"]})]
    p = write_jsonl(tmp_path / "sub" / "r.jsonl", rs)
    assert "来访者" in p.read_text(encoding="utf-8")                  # not ASCII-escaped
    back = load_records(p)
    assert list(back) == rs and back[3].language == "zh" and not back[3].has_targets
    assert [Record.from_dict(d) for d in read_jsonl(p)] == rs
    write_jsonl(p, [{"id": 99}], append=True)
    assert read_jsonl(p)[-1] == {"id": 99} and not list(p.parent.glob(".*tmp"))


def test_detect_language():
    assert detect_language("The client could not sleep.") == "en" and detect_language("来访者失眠一个月。") == "zh"


def test_detect_format_unknown(tmp_path):
    p = tmp_path / "x.csv"; p.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_records(p)
    with pytest.raises(ValueError, match="format must be one of"):
        load_records(p, format="csv")


# ---------------------------------------------------------------- samples, real data, run data

def test_samples():
    es = load_records(ROOT / "data" / "sample_es.jsonl")
    assert len(es) >= 8 and all(r.has_targets and r.language == "en" and r.experience_and_reflection for r in es)
    sizes = [sum(map(len, r.case_description + r.consultation_process)) + len(r.experience_and_reflection) for r in es]
    assert min(sizes) >= 2000 and max(sizes) >= 8000
    zh = load_records(ROOT / "data" / "sample_zh.jsonl")
    assert len(zh) >= 3 and all(r.has_targets and r.language == "zh" for r in zh)
    assert all(detect_language(r.causes) == "zh" for r in zh)


def test_real_es_dev(shared_data):
    rs = load_records(shared_data / "longemotion_es" / "es_dev.jsonl")
    assert len(rs) == 100 and len({r.id for r in rs}) == 100 and all(r.has_targets for r in rs)


def test_load_run_data(tmp_path):
    cfg = load_profile("cpu-smoke", test_path="data/sample_zh.jsonl")
    parts = load_run_data(cfg, tmp_path)
    n = len(load_records(cfg.data_path))
    assert len(parts["train"]) + len(parts["valid"]) == n and len(parts["valid"]) == max(1, int(n * 0.15 + 0.5))
    assert parts["test"] and all(r.language == "zh" for r in parts["test"])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    again = load_run_data(cfg.replace(data_path="does/not/exist.jsonl"), tmp_path)
    assert again == parts


# ---------------------------------------------------------------- one JSONL reader and writer that agree

def test_line_separators_in_text_survive_a_rerun(tmp_path):
    """A record whose text holds U+2028 / U+2029 / U+0085 (valid JSON) loads, goes into the run's split files, and reads back
    on a rerun (the reader split at those characters: 'line 2: malformed JSON' in a file emosum wrote itself)."""
    odd = rec("odd", causes="work stress\u2028and a move", symptoms="insomnia\u2029worry", treatment_effect="better\x85calmer")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [rec(1), odd, rec(2), rec(3)]), encoding="utf-8")   # escaped, as json.dumps writes
    cfg = load_profile("cpu-smoke", data_path=str(src), valid_frac=0.25)
    first = load_run_data(cfg, tmp_path / "run")
    again = load_run_data(cfg, tmp_path / "run")                    # read back from run/data/*.jsonl
    assert again == first and any(r.id == "odd" and "\u2028" in r.causes for s in again.values() for r in s)
    raw = src.read_text(encoding="utf-8").replace("\\u2028", "\u2028")   # a file with the raw character, as other tools write it
    src.write_text(raw, encoding="utf-8")
    assert load_records(src)[1].causes == "work stress\u2028and a move"
    for f in (tmp_path / "run" / "data").glob("*.jsonl"):           # what emosum writes: one line per record for any reader
        assert len(f.read_text(encoding="utf-8").splitlines()) == len(read_jsonl(f))


def test_written_files_get_the_umasks_permissions(tmp_path):
    import os, stat
    old = os.umask(0o022)
    try:
        p = write_jsonl(tmp_path / "a.jsonl", [{"a": 1}])
        assert stat.S_IMODE(p.stat().st_mode) == 0o644                  # was 0600 (a private temporary file renamed)
        os.chmod(p, 0o664); write_jsonl(p, [{"a": 2}])
        assert stat.S_IMODE(p.stat().st_mode) == 0o664                  # a replaced file keeps its permissions
    finally:
        os.umask(old)


def test_torn_and_bom_jsonl(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n{"a": 2, "b"')
    with pytest.raises(DataError, match=r"mine\.jsonl, line 2: malformed JSON .*incomplete last line"):
        read_jsonl(p)
    with pytest.warns(UserWarning, match=r"mine\.jsonl:2: incomplete last line"):
        assert read_jsonl(p, torn_tail="truncate") == [{"a": 1}]
    assert p.read_bytes() == b'\xef\xbb\xbf{"a": 1}\n' and read_jsonl(p) == [{"a": 1}]
    p.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"mine\.jsonl: not UTF-8 text"): read_jsonl(p)


# ---------------------------------------------------------------- ids and empty files

def test_int_and_str_ids_that_match_as_text_are_an_error_at_load(tmp_path):
    p = write_lines(tmp_path / "ids.jsonl", [rec(2), rec(3), rec("2")])
    with pytest.raises(DataError, match=r"ids\.jsonl, line 3, field 'id': id '2' is the same as id 2 at .*ids\.jsonl:1"):
        load_records(p)
    with pytest.warns(UserWarning, match="skipped 1 bad record"): rs = load_records(p, strict=False)
    assert [r.id for r in rs] == [2, 3] and rs.problems[0]["line"] == 3


def test_an_empty_file_says_it_is_empty(tmp_path):
    p = tmp_path / "empty.jsonl"; p.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: the file is empty"): load_records(p)
    p.write_text("\n  \n")
    with pytest.raises(DataError, match=r"the file is empty \(only blank lines\)"): load_records(p)
    with pytest.raises(DataError, match=r"holds no records \(it is empty\)"): load_records(p, format="longemotion")
