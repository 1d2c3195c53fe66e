"""The LLM judge against a real local chat-completions server (tests/judge_server.py, 127.0.0.1 only):
valid, fenced, malformed and slow replies, HTTP 429 / 500 / 400, the repair turn, failure recording,
the on-disk cache and resuming. Every test bounds both the number of requests and the time taken."""
import json, time
import pytest
from judge_server import JudgeServer, Reply, MALFORMED, fenced_judgement, valid_judgement

from emosum.data import ES_FIELDS, read_jsonl
from emosum.evaluation import JUDGE_REPAIR, JudgeParseError, judge, judge_run, judge_settings, parse_judge_reply

FAST = dict(backoff=0.01, max_backoff=0.05, max_retries=3, workers=1, timeout=5.0, api_key="test-key", model="scripted-judge")


def _rec(i):
    return {"id": i, "case_description": ["A case."], "consultation_process": ["A session."], "experience_and_reflection": "R.",
            **{f: f"reference {f} {i}" for f in ES_FIELDS}}


RECS = [_rec(1), _rec(2)]
PREDS = [{"id": i, "status": "ok", "fields": {f: f"predicted {f} {i}" for f in ES_FIELDS}, "raw": "{}"} for i in (1, 2)]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    "Loopback requests never go through a proxy, whatever the environment says."
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost"); monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for k in ("EMOSUM_JUDGE_BASE_URL", "EMOSUM_JUDGE_MODEL"): monkeypatch.delenv(k, raising=False)


def run(srv, tmp_path, preds=PREDS, recs=RECS, **kw):
    opts = {**FAST, "cache_dir": tmp_path / "cache", "out_path": tmp_path / "judge.jsonl", **kw}
    t0 = time.time()
    s = judge(preds, recs, base_url=srv.url, **opts)
    return s, time.time() - t0


def test_valid_replies_scored_and_written(tmp_path):
    with JudgeServer() as srv:
        s, secs = run(srv, tmp_path, repeats=2)
        assert srv.count == 4 and s["requests"] == 4 and secs < 10
        body = srv.requests[0]
    assert s["es_score"] == 4.0 and s["counts"] == {"ok": 4, "missing": 0, "failed": 0, "error": 0}
    assert s["per_repeat"] == [4.0, 4.0] and s["spread"]["std_across_repeats"] == 0.0 and s["repeats"] == 2
    assert s["per_field"]["causes"] == {"factual_consistency": 4.0, "completeness": 4.0, "clarity": 4.0}
    assert body["model"] == "scripted-judge" and body["temperature"] == 0 and len(body["messages"]) == 1
    content = body["messages"][0]["content"]
    assert "Causes: reference causes 1" in content and "Treatment effect: predicted treatment_effect 1" in content
    rows = read_jsonl(tmp_path / "judge.jsonl")
    assert len(rows) == 4 and {(r["id"], r["repeat"]) for r in rows} == {(1, 0), (2, 0), (1, 1), (2, 1)}
    assert all(r["status"] == "ok" and r["es_score"] == 4.0 and r["scores"]["symptoms"]["comment"] for r in rows)


def test_fenced_json_is_accepted(tmp_path):
    with JudgeServer(default=Reply(fenced_judgement(3))) as srv:
        s, _ = run(srv, tmp_path)
        assert srv.count == 2
    assert s["es_score"] == 3.0 and s["repaired"] == 0


def test_malformed_reply_repaired_once(tmp_path):
    with JudgeServer([MALFORMED, valid_judgement(5)], default=Reply(valid_judgement(5))) as srv:
        s, _ = run(srv, tmp_path, recs=RECS[:1])
        assert srv.count == 2
        repair = srv.requests[1]["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"] and repair[1]["content"] == MALFORMED
    assert repair[2]["content"].startswith(JUDGE_REPAIR.split("{")[0]) and "invalid JSON" in repair[2]["content"]
    assert s["counts"]["ok"] == 1 and s["repaired"] == 1 and s["es_score"] == 5.0


def test_unrepairable_reply_recorded_as_failure_and_cached(tmp_path):
    with JudgeServer(["I think it is good.", "Still prose, no JSON."]) as srv:
        s, _ = run(srv, tmp_path, recs=RECS[:1])
        assert srv.count == 2   # one try, one repair: no more
    assert s["counts"] == {"ok": 0, "missing": 0, "failed": 1, "error": 0} and s["es_score"] is None
    row = read_jsonl(tmp_path / "judge.jsonl")[0]
    assert row["status"] == "failed" and row["raw"] == ["I think it is good.", "Still prose, no JSON."]
    assert "no JSON object found" in row["error"]
    with JudgeServer() as srv:                         # cached failure: the judge is not asked again ...
        s2, _ = run(srv, tmp_path, recs=RECS[:1])
        assert srv.count == 0 and s2["counts"]["failed"] == 1
        s3, _ = run(srv, tmp_path, recs=RECS[:1], retry_failed=True)   # ... unless asked to
        assert srv.count == 1 and s3["counts"]["ok"] == 1


def test_rate_limit_and_server_error_are_retried(tmp_path):
    script = [Reply(status=429, headers={"Retry-After": "0"}), Reply(status=500), Reply(status=503)]
    with JudgeServer(script) as srv:
        s, secs = run(srv, tmp_path, recs=RECS[:1])
        assert srv.count == 4 and secs < 5
    assert s["counts"]["ok"] == 1 and s["requests"] == 4


def test_persistent_errors_give_up_and_are_not_cached(tmp_path):
    with JudgeServer(default=Reply(status=500)) as srv:
        s, secs = run(srv, tmp_path, recs=RECS[:1], max_retries=2)
        assert srv.count == 3 and secs < 5     # 1 + max_retries, then give up
    assert s["counts"]["error"] == 1 and s["es_score"] is None
    row = read_jsonl(tmp_path / "judge.jsonl")[0]
    assert row["status"] == "error" and "failed 3 times" in row["error"] and row["requests"] == 3
    with JudgeServer() as srv:                 # the error was not cached: a rerun asks again and succeeds
        s2, _ = run(srv, tmp_path, recs=RECS[:1])
        assert srv.count == 1 and s2["counts"]["ok"] == 1


def test_client_errors_are_not_retried(tmp_path):
    with JudgeServer(default=Reply(status=400)) as srv:
        s, _ = run(srv, tmp_path, recs=RECS[:1])
        assert srv.count == 1
    assert s["counts"]["error"] == 1 and "will not be retried" in read_jsonl(tmp_path / "judge.jsonl")[0]["error"]


def test_slow_reply_times_out_and_is_retried(tmp_path):
    with JudgeServer([Reply(valid_judgement(2), delay=3.0)], default=Reply(valid_judgement(4))) as srv:
        s, secs = run(srv, tmp_path, recs=RECS[:1], timeout=1.0)
        assert srv.count == 2 and secs < 3   # gave up on the slow one after ~1 s, did not wait 3 s
    assert s["counts"]["ok"] == 1 and s["es_score"] == 4.0


def test_resume_pays_only_for_what_is_missing(tmp_path):
    def flaky(body):   # record 2 keeps failing in the first run
        return Reply(status=500) if "reference causes 2" in body["messages"][0]["content"] else Reply(valid_judgement(4))
    with JudgeServer(default=flaky) as srv:
        s1, _ = run(srv, tmp_path, repeats=2, max_retries=1)
        assert srv.count == 2 + 2 * 2     # record 1 twice; record 2: 2 repeats x (1 + 1 retry)
    assert s1["counts"] == {"ok": 2, "missing": 0, "failed": 0, "error": 2}
    with JudgeServer() as srv:
        s2, _ = run(srv, tmp_path, repeats=2)
        assert srv.count == 2 and s2["cached"] == 2 and s2["requests"] == 2   # only record 2's two repeats
    assert s2["counts"]["ok"] == 4 and len(read_jsonl(tmp_path / "judge.jsonl")) == 4
    with JudgeServer() as srv:
        s3, _ = run(srv, tmp_path, repeats=2)
        assert srv.count == 0 and s3["cached"] == 4 and s3["requests"] == 0 and s3["es_score"] == 4.0
    # a changed prediction, another judge model or another repeat is a cache miss
    changed = [PREDS[0], {**PREDS[1], "fields": {f: "other" for f in ES_FIELDS}}]
    with JudgeServer() as srv:
        run(srv, tmp_path, preds=changed, repeats=2); assert srv.count == 2
        run(srv, tmp_path, repeats=3); assert srv.count == 2 + 2
        run(srv, tmp_path, repeats=1, model="another-judge"); assert srv.count == 4 + 2


def test_parallel_workers_bounded_requests(tmp_path):
    recs = [_rec(i) for i in range(12)]
    preds = [{"id": i, "status": "ok", "fields": {f: f"p{i}" for f in ES_FIELDS}} for i in range(12)]
    with JudgeServer(default=Reply(valid_judgement(3), delay=0.2)) as srv:
        s, secs = run(srv, tmp_path, preds=preds, recs=recs, workers=4)
        assert srv.count == 12 and secs < 2.4   # 12 x 0.2 s sequentially; 4 at a time ~0.6 s
    assert s["counts"]["ok"] == 12 and len(read_jsonl(tmp_path / "judge.jsonl")) == 12


def test_missing_and_failed_predictions(tmp_path):
    preds = [{"id": 1, "status": "failed", "fields": None, "raw": "Causes: stress. Symptoms: none"}]
    with JudgeServer() as srv:
        s, _ = run(srv, tmp_path, preds=preds)
        assert srv.count == 1       # the failed one is judged on its raw reply; the missing one costs nothing
        assert "Causes: stress. Symptoms: none" in srv.requests[0]["messages"][0]["content"]
    assert s["counts"] == {"ok": 1, "missing": 1, "failed": 0, "error": 0} and s["es_score"] == (4 + 1) / 2


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="no judge endpoint"): judge_settings()
    monkeypatch.setenv("EMOSUM_JUDGE_BASE_URL", "http://127.0.0.1:1/v1"); monkeypatch.setenv("EMOSUM_JUDGE_MODEL", "local-judge")
    assert judge_settings() == {"base_url": "http://127.0.0.1:1/v1", "model": "local-judge", "api_key": "EMPTY"}
    with JudgeServer() as srv:
        monkeypatch.setenv("EMOSUM_JUDGE_BASE_URL", srv.url)
        s = judge(PREDS, RECS[:1], cache_dir=tmp_path, workers=1)
        assert srv.count == 1 and srv.requests[0]["model"] == "local-judge" and s["judge_model"] == "local-judge"


def test_judge_run_writes_summary(tmp_path):
    from emosum.config import setup_run
    cfg, rd = setup_run("cpu-smoke", tmp_path / "run", judge_repeats=2)
    from emosum.evaluation import eval_records
    recs = eval_records(cfg, rd)
    (rd / "predictions.jsonl").write_text("".join(json.dumps({"id": r.id, "status": "ok", "fields": r.targets()}) + "\n" for r in recs))
    with JudgeServer() as srv:
        s = judge_run(rd, base_url=srv.url, api_key="k", cache_dir=tmp_path / "c", backoff=0.01)
        assert srv.count == 2 * len(recs)
    j = json.loads((rd / "judge.json").read_text())
    assert j["es_score"] == 4.0 and j["repeats"] == 2 and len(read_jsonl(rd / "judge.jsonl")) == 2 * len(recs)


def test_parse_judge_reply_rejects_partial():
    with pytest.raises(JudgeParseError, match="symptoms.completeness"):
        parse_judge_reply(json.dumps({f: {"factual_consistency": 3, "completeness": 0 if f == "symptoms" else 3, "clarity": 3} for f in ES_FIELDS}))
