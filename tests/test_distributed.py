"""Data-parallel training through accelerate on the CPU (gloo): 2 processes vs 1 with the same global batch."""
import json
from pathlib import Path

import pytest

from emosum.config import load_profile, project_root
from emosum.data import load_records
from emosum.training import read_train_log, train

STEPS = 4


def _cfg(**kw):
    return load_profile("cpu-smoke", max_steps=STEPS, save_steps=2, logging_steps=1, batch_size=1, warmup_ratio=0.0,
                        learning_rate=1e-3, **kw)


@pytest.fixture(scope="module")
def records():
    return list(load_records(project_root() / "data" / "sample_es.jsonl"))[:8]


@pytest.fixture(scope="module")
def single(records, tmp_path_factory):
    rd = tmp_path_factory.mktemp("single")
    res = train(_cfg(grad_accum=2), records, [], rd)
    return rd, res


@pytest.fixture(scope="module")
def double(records, tmp_path_factory):
    rd = tmp_path_factory.mktemp("double")
    res = train(_cfg(grad_accum=1, num_processes=2), records, [], rd)
    return rd, res


def _losses(rd):
    return [r["loss"] for r in read_train_log(rd) if r.get("loss") is not None]


def test_two_processes_match_one_with_the_same_global_batch(single, double):
    (rd1, r1), (rd2, r2) = single, double
    assert r2["world_size"] == 2 and r1["global_step"] == r2["global_step"] == STEPS
    l1, l2 = _losses(rd1), _losses(rd2)
    assert len(l1) == len(l2) == STEPS
    assert l2 == pytest.approx(l1, rel=2e-2), (l1, l2)   # ... but they are the same curve


def test_rank_zero_writes_once(double):
    rd, _ = double
    steps = [r["step"] for r in read_train_log(rd) if r.get("loss") is not None]
    assert steps == sorted(set(steps)), "each step logged once (rank 0 only)"
    assert (rd / "adapter" / "adapter_config.json").exists()
    meta = json.loads((rd / "adapter" / "meta.json").read_text())
    assert meta["result"]["world_size"] == 2
    assert sorted(p.name for p in (rd / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4", "training_key.json"]


def test_distributed_resume_ends_where_the_uninterrupted_run_does(double, records, tmp_path):
    import shutil
    from safetensors.torch import load_file
    rd_full, _ = double
    rd = tmp_path / "resumed"
    shutil.copytree(rd_full, rd)
    # simulate an interruption after step 2: drop what came later
    shutil.rmtree(rd / "checkpoints" / "checkpoint-4"); shutil.rmtree(rd / "adapter")
    log = [r for r in read_train_log(rd) if r["step"] <= 2]
    (rd / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    res = train(_cfg(grad_accum=1, num_processes=2), records, [], rd, resume=True)
    assert res["resumed_from"].endswith("checkpoint-2") and res["global_step"] == STEPS
    assert _losses(rd) == pytest.approx(_losses(rd_full), rel=1e-4)
    a = load_file(rd / "adapter" / "adapter_model.safetensors"); b = load_file(rd_full / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)
