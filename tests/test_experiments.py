"""emosum.experiments: k-fold cross-validation through the pipeline on the tiny model (CPU)."""
from pathlib import Path

import pytest

from emosum.data import load_records, read_jsonl
from emosum.experiments import cross_validate, kfold_split, leaderboard


@pytest.fixture(scope="module")
def trained_cv(tmp_path_factory):
    "A 2-fold CV of the tiny model on the bundled sample (one training step a fold), run as one resumes: fold 1, then the rest."
    root = tmp_path_factory.mktemp("trained_cv")
    part = cross_validate("cpu-smoke", name=root / "cv", folds=2, max_steps=1, max_new_tokens=8, progress_bar=False,
                          only_folds=[1])                                                 # one fold now, the other later
    early = dict(part=part, fold0_ran=(root / "cv" / "fold0" / "run.json").exists(),
                 fold1={str(r["id"]) for r in read_jsonl(root / "cv" / "fold1" / "predictions.jsonl")})
    return dict(early, res=cross_validate("cpu-smoke", name=root / "cv", folds=2, max_steps=1, max_new_tokens=8, progress_bar=False))


def test_cross_validation_predicts_every_record_once_and_never_trains_on_it(trained_cv):
    recs, part, res = load_records("data/sample_es.jsonl"), trained_cv["part"], trained_cv["res"]
    assert part["folds_done"] == [1] and part["partial"] and part["metrics"]["n"] == len(trained_cv["fold1"]) < len(recs)
    assert not trained_cv["fold0_ran"]                                                    # fold 0 did not run then
    with pytest.raises(ValueError, match="out of range"):
        cross_validate("cpu-smoke", name=res["cv_dir"], folds=2, max_steps=1, progress_bar=False, only_folds=[2])
    cv = Path(res["cv_dir"])
    oof = read_jsonl(cv / "predictions.jsonl")
    assert sorted(str(r["id"]) for r in oof) == sorted(str(r.id) for r in recs)          # every record exactly once
    assert {r["fold"] for r in oof} == {0, 1} and res["metrics"]["n"] == len(recs)
    for i in (0, 1):
        fd = cv / f"fold{i}"
        tested = {str(r["id"]) for r in read_jsonl(fd / "predictions.jsonl")}
        trained = {str(r["id"]) for s in ("train", "valid") for r in read_jsonl(fd / "data" / f"{s}.jsonl")}
        assert tested and trained and not tested & trained                                 # no record in its own training fold
        assert (fd / "adapter" / "adapter_config.json").exists()
    assert (cv / "metrics.json").exists() and (cv / "scores.jsonl").exists() and "copy" in res["metrics"]["baselines"]
    board = leaderboard([cv])
    assert board.loc[0, "n"] == len(recs) and board.loc[0, "train_s"] > 0
    again = cross_validate("cpu-smoke", name=cv, folds=2, max_steps=1, max_new_tokens=8, progress_bar=False)
    assert again["metrics"]["overall"] == res["metrics"]["overall"]                         # finished folds are reused
    done = cross_validate("cpu-smoke", name=cv, folds=2, max_steps=1, max_new_tokens=8, progress_bar=False,
                          only_folds=[0])                                                 # all folds finished: not partial
    assert done["folds_done"] == [0, 1] and not done["partial"] and done["metrics"]["overall"] == res["metrics"]["overall"]


def test_folds_are_stable_and_disjoint():
    f = kfold_split([f"r{i}" for i in range(11)], 3, seed=7)
    assert sorted(sum(f, [])) == sorted(f"r{i}" for i in range(11)) and [len(x) for x in f] == [4, 4, 3]
    with pytest.raises(ValueError, match="2 <= k"): kfold_split(["a", "b"], 3)


def test_every_recipe_is_a_valid_profile_and_every_recorded_row_has_its_recipe():
    "Each recipe's overrides make a valid profile, and each row of the committed leaderboard names a recipe (or its folds 0-2 rerun)."
    import shlex
    import pandas as pd
    from emosum.config import load_profile, project_path
    from emosum.experiments import POOLS, RECIPES, pool_command, recipe_args, recipe_command
    for name, (profile, ov) in RECIPES.items():
        _, how, prof = recipe_args(name)                      # zero_shot and adapters_from are cross_validate's, not the profile's
        assert {**how, **prof} == {"zero_shot": False, "adapters_from": None, **ov} and not set(how) & set(prof)
        cfg = load_profile(profile, **prof)
        assert all(getattr(cfg, k) == v for k, v in prof.items()), name
        assert recipe_command(name).startswith(f"emosum cv --profile {profile} ")
        argv = shlex.split(recipe_command(name, data_path="my data/es.jsonl"))   # what a shell passes on, * and spaces too
        assert argv[argv.index("--data") + 1] == "my data/es.jsonl"
        val = lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        assert [argv[i + 1] for i, a in enumerate(argv) if a == "-p"] == [f"{k}={val(v)}" for k, v in prof.items()]
        assert ("--zero-shot" in argv) == how["zero_shot"] and ("--adapters-from" in argv) == bool(how["adapters_from"])
        if how["adapters_from"]:                                            # its source is a recipe that trains, listed before it
            assert list(RECIPES).index(how["adapters_from"]) < list(RECIPES).index(name)
            assert not recipe_args(how["adapters_from"])[1]["zero_shot"] and not recipe_args(how["adapters_from"])[1]["adapters_from"]
    for i, (name, (parts, utility)) in enumerate(POOLS.items()):   # a pool's parts are recipes or earlier pools, each
        earlier = list(POOLS)[:i]                                   # rerun by its own command first
        assert parts and all(p in RECIPES or p in earlier for p in parts) and f" --name {name}" in pool_command(name)
    board = pd.read_csv(project_path("docs/experiments.csv"))
    assert len(board) and all(r.removesuffix("-folds0-2") in RECIPES or r in POOLS for r in board.recipe)


def test_gpu_cv_tarball_keeps_the_small_files_and_each_fold_adapters_meta(tmp_path):
    """bench/gpu_cv.py's tarball: the CV's and folds' small files, train logs, per-record scores and baselines, the fold
    adapters' meta.json; no weights or checkpoints."""
    import importlib.util
    from emosum.config import project_path
    spec = importlib.util.spec_from_file_location("gpu_cv", project_path("bench/gpu_cv.py"))
    gpu_cv = importlib.util.module_from_spec(spec); spec.loader.exec_module(gpu_cv)
    files = ["cv.json", "metrics.json", "fold0/run.json", "fold0/train_log.jsonl", "fold0/predictions.jsonl", "fold0/adapter/meta.json",
             "scores.jsonl", "baselines/copy.jsonl", "baselines/extractive.jsonl",
             "fold0/adapter/adapter_model.safetensors", "fold0/adapter/profile.json", "fold0/checkpoints/checkpoint-3/meta.json"]
    for f in files:
        (tmp_path / "cv1" / f).parent.mkdir(parents=True, exist_ok=True); (tmp_path / "cv1" / f).write_text("{}")
    added = gpu_cv.tar_small(tmp_path, ["cv1"], [], tmp_path / "o.tgz")
    assert sorted(added) == sorted(f"cv1/{f}" for f in files[:9])


def test_mbr_sample_curve_rescores_subsets_of_the_stored_answers():
    "k = 1 is the mean of the single answers' scores; the choice among all answers is mbr_choice's; the oracle bounds both."
    import json
    from emosum.evaluation import rouge
    from emosum.experiments import mbr_sample_curve
    from emosum.inference import mbr_choice
    from emosum.vocab import ES_FIELDS
    ref = dict(causes="stress at work", symptoms="poor sleep and worry", treatment_process="CBT and relaxation",
               characteristics_of_illness="anxiety", treatment_effect="sleeps better")
    texts = ["stress at work", "work stress and money", "a divorce", "stress at home"]
    answers = [json.dumps({**ref, "causes": t}) for t in texts] + ["no JSON here"]
    rows, refs = [dict(id=i, mbr=dict(answers=answers)) for i in range(2)], [dict(id=i, **ref) for i in range(2)]
    curve = mbr_sample_curve(rows, refs, sizes=(1, 5), draws=400, seed=1)
    get = lambda how, k, f: curve.query("how == @how and k == @k and field == @f").rougeL.item()
    singles = [rouge(t, ref["causes"])["rougeL"] for t in texts] + [0.0]                   # the failed answer scores 0
    assert abs(get("mbr", 1, "causes") - sum(singles) / 5) < 0.03                           # 400 draws of one answer
    chosen = mbr_choice(answers)[0].fields["causes"]
    assert get("mbr", 5, "causes") == rouge(chosen, ref["causes"])["rougeL"] and get("oracle", 5, "causes") == 1.0
    assert all(get("oracle", 5, f) >= get("mbr", k, f) for k in (1, 5) for f in ES_FIELDS)
    assert get("mbr", 5, "overall") == sum(get("mbr", 5, f) for f in ES_FIELDS) / 5


def test_mbr_chooser_table_compares_choices_among_all_the_answers():
    import json
    import pytest
    from emosum.experiments import CHOOSERS, mbr_chooser_table
    ref = dict(causes="stress at work", symptoms="poor sleep", treatment_process="CBT", characteristics_of_illness="anxiety",
               treatment_effect="sleeps better")
    causes = ["a long story about money, family, work and the neighbours", "stress at work", "stress at work again", "grief"]
    answers = [json.dumps({**ref, "causes": c}) for c in causes]
    table = mbr_chooser_table([dict(id=1, mbr=dict(answers=answers))], [dict(id=1, **ref)]).set_index("chooser")
    assert list(table.index) == list(CHOOSERS) and set(table.columns) >= {"causes", "overall"}
    assert table.loc["rougeL", "causes"] == 1.0                 # the value the others agree with is the reference's
    assert table.loc["first", "causes"] < 0.5                   # the first answer, taken as it is
    assert table.loc["median-length", "causes"] > table.loc["first", "causes"]   # lengths 11, 3, 4, 1: median 3
    assert (table.drop(columns="causes").drop(columns="overall") == 1.0).all().all()   # the other fields agree everywhere
    with pytest.raises(ValueError, match="no prediction row holds sampled answers"):
        mbr_chooser_table([dict(id=1, mbr=None)], [dict(id=1, **ref)])
    with pytest.raises(ValueError, match="1 predictions have no reference record"):
        mbr_chooser_table([dict(id=2, mbr=dict(answers=answers))], [dict(id=1, **ref)])


def _fake_cv(d: Path, rows: list, train_s: float = 5.0) -> Path:
    import json
    from emosum.config import load_profile, project_path
    from emosum.data import write_jsonl
    d.mkdir(parents=True)
    write_jsonl(d / "predictions.jsonl", rows); load_profile("cpu-smoke").save(d / "profile.json")
    (d / "cv.json").write_text(json.dumps({"profile": "cpu-smoke", "folds": 2, "train_seconds": train_s, "generate_seconds": 1,
                                           "data_path": str(project_path("data/sample_es.jsonl"))}))
    return d


def test_emosum_pool_chooses_among_every_cross_validations_answers(tmp_path, capsys):
    "`emosum pool`: per record, each field chosen among both CVs' answers (out of fold in both), scored as a CV folder."
    import json
    from emosum.config import project_path
    from emosum.pipeline import main
    from emosum.vocab import TASK_FIELDS, record_value
    recs = load_records(project_path("data/sample_es.jsonl"))[:4]
    truth = lambda r, f: str(record_value(r, f))
    answer = lambda r, good: json.dumps({f: truth(r, f) if f in good else "nothing useful here" for f in TASK_FIELDS["es"]})
    # CV a: right about causes and symptoms; CV b: two samples, right about symptoms and the rest; symptoms is where
    # all three answers agree, so every field ends up right only by pooling
    a = _fake_cv(tmp_path / "a", [dict(id=r.id, raw=answer(r, {"causes", "symptoms"}), fold=i % 2) for i, r in enumerate(recs)])
    rest = set(TASK_FIELDS["es"]) - {"causes"}
    b = _fake_cv(tmp_path / "b", [dict(id=r.id, fold=i % 2, raw=answer(r, rest), mbr=dict(answers=[answer(r, rest), answer(r, rest | {"causes"})]))
                                  for i, r in enumerate(recs)], train_s=7.0)
    assert main(["pool", str(a), str(b), "--name", str(tmp_path / "ab")]) == 0
    out = capsys.readouterr().out
    assert "pooled 2 cross-validations, 3 answers a record" in out and "(a + b; utility rougeL)" in out.split("pool: ")[1]
    rows = read_jsonl(tmp_path / "ab" / "predictions.jsonl")
    assert [r["id"] for r in rows] == [r.id for r in recs] and all(r["mbr"]["source"] == [0, 1, 1] for r in rows)
    assert all(row["fields"] == {f: truth(r, f) for f in TASK_FIELDS["es"]} for row, r in zip(rows, recs))
    cv = json.loads((tmp_path / "ab" / "cv.json").read_text())
    assert cv["overrides"] == {"pool": ["a", "b"], "utility": "rougeL"} and cv["train_seconds"] == 12.0
    assert json.loads((tmp_path / "ab" / "metrics.json").read_text())["overall"]["rougeL"] == pytest.approx(1.0)
    # bad input: a clear error (exit 2), nothing deep inside a library
    assert main(["pool", str(a), str(b), "--name", str(tmp_path / "x"), "--utility", "bleu"]) == 2
    assert "--utility must be one of" in capsys.readouterr().err
    from emosum.experiments import pool_cv
    with pytest.raises(ValueError, match="utility must be one of"):
        pool_cv([a, b], tmp_path / "z", utility="bleu")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()   # refused before any folder is made
    assert main(["pool", str(a), str(tmp_path / "missing"), "--name", str(tmp_path / "y")]) == 2
    assert "No run" in capsys.readouterr().err


@pytest.mark.parametrize("first, then", [("rougeL", "rougeL"), ("rougeL+1.0*semsim", "rougeL+semsim")])
def test_pool_cv_resumes_after_an_interruption(tmp_path, monkeypatch, first, then):
    "Rows are appended as they are chosen; a rerun chooses only the records left (by the same utility, however spelt),"
    "and the work file goes at the end."
    import json
    import numpy as np
    import emosum.evaluation as ev
    import emosum.inference as inf
    from emosum.config import project_path
    from emosum.experiments import pool_cv
    from emosum.vocab import TASK_FIELDS, record_value
    recs = load_records(project_path("data/sample_es.jsonl"))[:4]
    ans = lambda r: json.dumps({f: str(record_value(r, f)) for f in TASK_FIELDS["es"]})
    a = _fake_cv(tmp_path / "a", [dict(id=r.id, raw=ans(r)) for r in recs])
    b = _fake_cv(tmp_path / "b", [dict(id=r.id, raw="not an answer") for r in recs])
    real, calls = inf.mbr_choice, []
    def stop_after_two(answers, *args):
        if len(calls) == 2: raise KeyboardInterrupt
        calls.append(answers); return real(answers, *args)
    monkeypatch.setattr(inf, "mbr_choice", stop_after_two)
    monkeypatch.setattr(ev, "embed", lambda texts, model=None: np.ones((len(texts), 2)))   # no sentence model needed
    with pytest.raises(KeyboardInterrupt):
        pool_cv([a, b], tmp_path / "ab", progress_bar=False, utility=first)
    partial = tmp_path / "ab" / "pool.partial.jsonl"
    assert len(read_jsonl(partial)) == 2 and not (tmp_path / "ab" / "predictions.jsonl").exists()
    calls.clear(); monkeypatch.setattr(inf, "mbr_choice", lambda answers, *args: calls.append(answers) or real(answers, *args))
    res = pool_cv([a, b], tmp_path / "ab", progress_bar=False, utility=then)
    assert len(calls) == 2 and not partial.exists()                       # only the two records left were chosen
    rows = read_jsonl(tmp_path / "ab" / "predictions.jsonl")
    assert [r["id"] for r in rows] == [r.id for r in recs] and all(r["mbr"]["utility"] == then for r in rows)
    assert res["metrics"]["overall"]["rougeL"] == pytest.approx(1.0)


def test_the_best_recipe_profiles_are_what_the_chapter_measured():
    "Each model's best-recipe profile trains and decodes exactly as its cross-validated recipe did (settings.ini): the"
    "recipe's settings, with its stored answers chosen among by the utility of the pool that re-chose them, if one did."
    from emosum.config import load_profile
    from emosum.experiments import POOLS, RECIPES
    for profile, recipe, pool in [("qwen2.5-0.5b-lora", "qwen0.5b-lora-aux-mbr64", "qwen0.5b-lora-aux-mbr64-rougeL-0.6semsim"),
                                  ("qwen2.5-0.5b-lora", "qwen0.5b-lora-aux-mbr64-0.6semsim", None),   # and end to end
                                  ("smollm2-lora", "smollm2-r64-lr4e-4-5ep-mbr8", None)]:
        base, ov = RECIPES[recipe]
        if pool:
            assert POOLS[pool][0] == [recipe]                                # the pool re-chose that recipe's answers
            ov = {**ov, "mbr_utility": POOLS[pool][1]}
        measured, named = load_profile(base, **ov).to_dict(), load_profile(profile).to_dict()
        differ = {k: (measured[k], named[k]) for k in measured if k not in ("name", "description") and measured[k] != named[k]}
        assert differ == {}, (profile, differ)
    assert load_profile("smollm2-lora").to_dict() != load_profile("smollm2-gpu").to_dict()


def test_the_shipped_adapter_is_the_recipe_the_chapter_cross_validated():
    "The embedded adapter's own run record trained with exactly the settings of its cross-validated recipe."
    import json
    from emosum.config import EMBEDDED_ADAPTERS, load_profile
    from emosum.experiments import RECIPES
    folder = Path(__import__("emosum").__file__).parent / EMBEDDED_ADAPTERS["smollm2-135m-es"][0]
    run = json.loads((folder / "run.json").read_text())
    assert run["steps"]["03"]["status"] == "done"
    base, ov = RECIPES["smollm2-r8-lr4e-4-5ep"]
    measured = load_profile(base, **ov).to_dict()
    trained = run["config"]
    skip = ("name", "description", "data_path", "gen_memory_fraction")     # where it ran, not what it learned
    assert run["profile"] == base
    from emosum.training import ADDED_LATER
    trained = {**ADDED_LATER, **trained}     # a setting newer than the run: it trained with the setting's default
    assert {k: (measured[k], trained[k]) for k in measured if k not in skip and measured[k] != trained.get(k)} == {}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["result"]["train_examples"] + meta["result"]["valid_examples"] == 100     # the whole dev file


def test_a_cv_decodes_with_another_cvs_fold_adapters_and_refuses_what_they_were_not_trained_for(trained_cv, tmp_path):
    """adapters_from: no training; fold i predicts with the source CV's fold-i adapter, under other decoding settings.
    Other records or folds, other training settings, no source, itself, or zero-shot as well: errors before any fold runs."""
    import shlex
    import pandas as pd
    from emosum.experiments import RECIPES, recipe_command
    from emosum.pipeline import _parser, read_run, summary
    kw = dict(folds=2, max_steps=1, progress_bar=False)                                  # the trained CV's folds and training
    src = Path(trained_cv["res"]["cv_dir"])
    dec = cross_validate("cpu-smoke", name=tmp_path / "dec", max_new_tokens=60, constrained_json=True, adapters_from=src, **kw)
    d, recs = Path(dec["cv_dir"]), load_records("data/sample_es.jsonl")
    oof = read_jsonl(d / "predictions.jsonl")
    assert sorted(str(r["id"]) for r in oof) == sorted(str(r.id) for r in recs)          # every record exactly once
    for i in (0, 1):
        theirs = {r["id"]: r for r in read_jsonl(src / f"fold{i}" / "predictions.jsonl")}
        rows = read_jsonl(d / f"fold{i}" / "predictions.jsonl")
        assert rows and set(theirs) == {r["id"] for r in rows}                           # the same test fold
        assert all(r["adapter"] == str(src / f"fold{i}" / "adapter") and r["constrained"] and r["status"] == "ok"
                   and r["key"]["adapter_sha256"] == theirs[r["id"]]["key"]["adapter_sha256"] for r in rows)
        assert "03" not in read_run(d / f"fold{i}")["steps"] and not (d / f"fold{i}" / "adapter").exists()   # nothing trained
    board = leaderboard([src, d]).set_index("recipe")
    assert board.loc["dec", "adapters_from"] == "cv" and board.loc["dec", "train_s"] == 0 and not board.loc["dec", "zero_shot"]
    assert board.loc["cv", "train_s"] > 0 and pd.isna(board.loc["cv", "adapters_from"])
    assert "decoding cv's adapters" in summary(d).splitlines()[0]
    again = cross_validate("cpu-smoke", name=d, max_new_tokens=60, constrained_json=True, adapters_from=src, **kw)
    assert again["metrics"]["overall"] == dec["metrics"]["overall"]                         # finished folds are reused
    bad = dict(name=tmp_path / "bad", max_new_tokens=8, **kw)
    with pytest.raises(ValueError, match=r"trained with other settings.*lora_r: 8 then, 4 now"):
        cross_validate("cpu-smoke", lora_r=4, adapters_from=src, **bad)
    with pytest.raises(ValueError, match="fold file fold0.pool.jsonl .*other records"):
        cross_validate("cpu-smoke", adapters_from=src, **{**bad, "folds": 3})
    with pytest.raises(FileNotFoundError, match="no cross-validation folder"):
        cross_validate("cpu-smoke", adapters_from=tmp_path / "nowhere", **bad)
    with pytest.raises(ValueError, match="names this CV itself"):
        cross_validate("cpu-smoke", adapters_from=src, **{**bad, "name": src})
    with pytest.raises(ValueError, match="exclude each other"):
        cross_validate("cpu-smoke", adapters_from=src, zero_shot=True, **bad)
    import shutil                                # a source with fold 0 trained only: fold 0 may run, fold 1 not yet
    from emosum.config import load_profile
    from emosum.experiments import _source_adapters, write_folds
    half = tmp_path / "half"
    shutil.copytree(src / "folds", half / "folds"); shutil.copytree(src / "fold0", half / "fold0")
    files, cfg = write_folds("data/sample_es.jsonl", tmp_path / "new" / "folds", 2), load_profile("cpu-smoke", max_steps=1)
    got = _source_adapters(half, tmp_path / "new", cfg, files, need=[0])
    assert got == [half.resolve() / "fold0" / "adapter", half.resolve() / "fold1" / "adapter"]
    with pytest.raises(FileNotFoundError, match="fold 1 has no trained adapter"):
        _source_adapters(half, tmp_path / "new", cfg, files)
    for name, (_, ov) in RECIPES.items():        # a recipe that decodes another's adapters: its command says so
        if ov.get("adapters_from"):
            a = _parser().parse_args(shlex.split(recipe_command(name))[1:])
            assert a.adapters_from == ov["adapters_from"] and not a.zero_shot
