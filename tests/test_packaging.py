"""Packaging and documentation: the license, the Python floor, CONTRIBUTING.md's commands and the run-folder reference.

Fast and import-free: the package's sources are read with `ast`, so these tests take well under a second.
"""
import ast, re, sys, tomllib
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()
RUN_FOLDER_DOC = (ROOT / "docs" / "run_folder.md").read_text()


# --- license -------------------------------------------------------------------------------------------------------

def test_license_file_is_the_apache_license_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "Apache-2.0"
    assert "LICENSE" in PROJECT.get("license-files", ["LICENSE"])       # what setuptools (>= 77) puts in the wheel
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert "Copyright 2026 emosum developers" in text and "[yyyy]" not in text
    assert not any("License ::" in c for c in PROJECT.get("classifiers", [])), \
        "a license classifier beside a license expression is an error for setuptools >= 77"


# --- requires-python -----------------------------------------------------------------------------------------------

def _floor(spec: str) -> Version | None:
    "The lowest version a Requires-Python specifier admits (its `>=` / `>` bound), or None without one."
    lows = [Version(s.version) for s in SpecifierSet(spec) if s.operator in (">=", ">")]
    return max(lows) if lows else None


def _pins() -> dict[str, str]:
    "Every `name==version` pin of the project: its dependencies and its extras."
    reqs = [*PROJECT["dependencies"], *(r for extra in PROJECT.get("optional-dependencies", {}).values() for r in extra)]
    return dict(r.split("==", 1) for r in reqs if "==" in r)


def test_requires_python_admits_this_python_and_is_at_least_3_11():
    spec = PROJECT["requires-python"]
    here = Version(".".join(map(str, sys.version_info[:3])))
    assert here in SpecifierSet(spec), f"requires-python {spec!r} does not admit the running Python {here}"
    assert _floor(spec) is not None and _floor(spec) >= Version("3.11"), spec


def test_requires_python_is_the_highest_floor_of_the_pinned_packages():
    "requires-python is the max of the pins' own Requires-Python (those installed at their pinned version)."
    ours, floors = _floor(PROJECT["requires-python"]), {}
    for name, version in _pins().items():
        try: md = metadata(name)
        except PackageNotFoundError: continue
        if Version(md["Version"]).release != Version(version).release: continue     # e.g. torch 2.13.0+cpu is 2.13.0
        if md.get("Requires-Python") and _floor(md["Requires-Python"]):
            floors[name] = _floor(md["Requires-Python"])
    assert floors.get("numpy") == Version("3.11"), "numpy 2.4.6 needs Python >= 3.11"
    need = max(floors.values())
    assert ours >= need, f"requires-python {PROJECT['requires-python']!r} is below what {[n for n, v in floors.items() if v == need]} need ({need})"
    assert ours == need, f"requires-python {PROJECT['requires-python']!r} asks for more than any pin needs ({need})"
    versions = {c.rsplit("::", 1)[1].strip() for c in PROJECT["classifiers"] if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert versions and min(versions, key=Version) == f"{ours.major}.{ours.minor}", f"classifiers {sorted(versions)} vs the floor {ours}"


# --- CONTRIBUTING.md -----------------------------------------------------------------------------------------------

def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m for line in text.splitlines() if (hit := re.match(r"^([A-Za-z][\w.-]*)\s*:(?!=)", line)) for m in [hit[1]]}


def test_contributing_explains_run_cells_testing_and_export():
    for needle in ("#| run", "#| export", "make test", "make export", "separation_problems", "tools/make_readme.py",
                   "EMOSUM_DATA", "slow", "bench/README.md", "bench/gpu_setup.sh"):
        assert needle in CONTRIBUTING, needle


def test_every_make_target_named_in_contributing_exists():
    named = set(re.findall(r"(?:`|^)make ([a-z][\w-]*)", CONTRIBUTING, flags=re.M))   # in code: `make x`, or a line of a block
    assert {"test", "export"} <= named
    missing = named - _makefile_targets()
    assert not missing, f"CONTRIBUTING.md names make targets the Makefile lacks: {sorted(missing)}"


def test_every_project_file_named_in_contributing_exists():
    paths = set(re.findall(r"\b((?:bench|tools|tests|docs|nbs)/[\w./-]+\.(?:py|sh|md|ipynb))\b", CONTRIBUTING))
    assert paths
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"CONTRIBUTING.md names files that do not exist: {missing}"


def test_make_lab_allows_root_only_as_root():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"\$\(filter 0,\$\(shell id -u\)\),--allow-root", text), "make lab should pass --allow-root when id -u is 0"
    assert re.search(r"jupyter lab \$\(LAB_ARGS\)", text)


# --- docs/run_folder.md --------------------------------------------------------------------------------------------

def _module(name: str) -> ast.Module:
    return ast.parse((ROOT / "emosum" / f"{name}.py").read_text())


def _function(mod: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in mod.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _dict_keys(node) -> set[str]:
    return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def _keys_of(fn: ast.AST, var: str) -> set[str]:
    "The str keys a function gives the dict `var`: `var = {...}` (also `x or {...}`), `var.update(k=...)`, `var['k'] = ...`."
    keys = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == var for t in n.targets):
            for d in ast.walk(n.value):
                if isinstance(d, ast.Dict) and d in (n.value, *getattr(n.value, "values", [])): keys |= _dict_keys(d)
        elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "update"
              and isinstance(n.func.value, ast.Name) and n.func.value.id == var):
            keys |= {k.arg for k in n.keywords if k.arg}
        elif (isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)
              and n.value.id == var and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str)):
            keys.add(n.slice.value)
    return keys


def _returned_dict_keys(fn: ast.FunctionDef) -> set[str]:
    return set().union(*(_dict_keys(n.value) for n in ast.walk(fn) if isinstance(n, ast.Return) and isinstance(n.value, ast.Dict)))


def _undocumented(keys) -> list[str]:
    return sorted(k for k in keys if f"`{k}`" not in RUN_FOLDER_DOC)


def test_run_folder_doc_lists_every_key_the_pipeline_writes_to_run_json():
    pipeline = _module("pipeline")
    writers = ("_start_state", "_run_steps", "_execute_step", "_write_run")     # the run loop and its helpers
    top = set().union(*(_keys_of(_function(pipeline, f), "state") for f in writers))
    assert {"created", "updated", "profile", "overrides", "params", "config", "config_hash", "git", "versions", "data",
            "status", "steps", "selected", "pid"} <= top, f"the key extraction missed some (found {sorted(top)})"
    steps = _keys_of(_function(pipeline, "_execute_step"), "rec") | _keys_of(_function(pipeline, "_run_steps"), "prev")
    assert {"notebook", "status", "config_hash", "started", "finished", "seconds", "error", "last_skipped"} <= steps, sorted(steps)
    assert not _undocumented(top | steps), f"docs/run_folder.md does not mention run.json keys {_undocumented(top | steps)}"
    assert "run.json" in RUN_FOLDER_DOC and ".run.lock" in RUN_FOLDER_DOC


def test_run_folder_doc_lists_prediction_metrics_and_cv_keys():
    vocab = _module("vocab")   # the prediction row's schema lives in emosum.vocab (00_vocab)
    pred = next(n.value for n in vocab.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "PREDICTION_KEYS" for t in n.targets))
    pred_keys = {e.value for e in pred.elts}
    assert {"id", "status", "fields", "key", "engine"} <= pred_keys
    evaluation = _module("evaluation")
    metrics = (_returned_dict_keys(_function(evaluation, "summarize_scores")) | _returned_dict_keys(_function(evaluation, "match_predictions"))
               | _keys_of(_function(evaluation, "evaluate_run"), "metrics") | _keys_of(_function(evaluation, "evaluate_run"), "meta"))
    assert {"n", "json_valid_rate", "overall", "ci95", "matched", "baselines", "record_ids"} <= metrics, sorted(metrics)
    cv = _keys_of(_function(_module("experiments"), "cross_validate"), "summary")
    assert {"profile", "folds", "fold_runs"} <= cv, sorted(cv)
    for what, keys in (("predictions.jsonl", pred_keys), ("metrics.json", metrics), ("cv.json", cv)):
        assert not _undocumented(keys), f"docs/run_folder.md does not mention {what} keys {_undocumented(keys)}"


def test_run_folder_doc_lists_every_profile_key_and_training_result_key():
    import dataclasses
    from emosum.config import Profile
    assert not _undocumented(f.name for f in dataclasses.fields(Profile)), "docs/run_folder.md's profile.json keys"
    training = _module("training")
    result = _returned_dict_keys(_function(training, "_train_result")) | _returned_dict_keys(_function(training, "_gpu_peak"))
    assert {"global_step", "best_checkpoint", "select_metric", "evaluations", "peak_gpu_gib"} <= result, sorted(result)
    assert not _undocumented(result), f"docs/run_folder.md does not mention meta.json result keys {_undocumented(result)}"


@pytest.mark.parametrize("name", ["run.json", "profile.json", "data/{train,valid,test}.jsonl", "prompt_stats.csv",
                                  "checkpoints/", "training_key.json", "train_log.jsonl", "selection/step-N.jsonl", "adapter/", "meta.json",
                                  "predictions.jsonl", "predictions.replaced.jsonl", "submission.jsonl",
                                  "submission_cloudcom.jsonl", "scores.jsonl", "metrics.json", "baselines/", "judge.json",
                                  "judge.jsonl", "NN_*.ipynb", ".run.lock", "cv.json", "folds/", "fold<i>/"])
def test_run_folder_doc_covers_each_file(name):
    assert name in RUN_FOLDER_DOC
