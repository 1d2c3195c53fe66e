"""The LLM judge against a real local chat-completions server (tests/judge_server.py, 127.0.0.1 only):
valid, fenced, malformed and slow replies, HTTP 429 / 500 / 400, the repair turn, failure recording,
the on-disk cache and resuming. Every test bounds both the number of requests and the time taken."""
import json, time
import pytest
from judge_server import JudgeServer, Reply, MALFORMED, fenced_judgement, valid_judgement

from emosum.data import ES_FIELDS, read_jsonl
from emosum.evaluation import JUDGE_REPAIR, JudgeError, JudgeParseError, judge, judge_run, judge_settings, parse_judge_reply

FAST = dict(max_retries=3, workers=1, timeout=5.0, api_key="test-key", model="scripted-judge")
RETRY_SOON = {"Retry-After": "0.01"}      # the openai client's own retries honour it (its default first wait is 0.5 s)


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
    script = [Reply(status=429, headers=RETRY_SOON), Reply(status=500, headers=RETRY_SOON), Reply(status=503, headers=RETRY_SOON)]
    with JudgeServer(script) as srv:
        s, secs = run(srv, tmp_path, recs=RECS[:1])
        assert srv.count == 4 and secs < 5
    assert s["counts"]["ok"] == 1 and s["requests"] == 4


def test_persistent_errors_give_up_and_are_not_cached(tmp_path):
    with JudgeServer(default=Reply(status=500, headers=RETRY_SOON)) as srv:
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
        return Reply(status=500, headers=RETRY_SOON) if "reference causes 2" in body["messages"][0]["content"] else Reply(valid_judgement(4))
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
        s = judge_run(rd, base_url=srv.url, api_key="k", cache_dir=tmp_path / "c")
        assert srv.count == 2 * len(recs)
    j = json.loads((rd / "judge.json").read_text())
    assert j["es_score"] == 4.0 and j["repeats"] == 2 and len(read_jsonl(rd / "judge.jsonl")) == 2 * len(recs) and j["status"] == "ok"


def test_parse_judge_reply_rejects_partial():
    with pytest.raises(JudgeParseError, match="symptoms.completeness"):
        parse_judge_reply(json.dumps({f: {"factual_consistency": 3, "completeness": 0 if f == "symptoms" else 3, "clarity": 3} for f in ES_FIELDS}))


# ---------------------------------------------------------------- failing fast and loudly
def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _judge_run_setup(tmp_path):
    from emosum.config import setup_run
    from emosum.evaluation import eval_records
    cfg, rd = setup_run("cpu-smoke", tmp_path / "run", judge_repeats=1)
    recs = eval_records(cfg, rd)
    (rd / "predictions.jsonl").write_text("".join(json.dumps({"id": r.id, "status": "ok", "fields": r.targets()}) + "\n" for r in recs))
    return cfg, rd, recs


def test_unreachable_endpoint_fails_at_once_naming_it(tmp_path):
    "Nothing listening at the base URL: a JudgeError naming it within seconds (it took 124 s of retries and ended 'done')."
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    t0 = time.time()
    with pytest.raises(JudgeError, match=rf"judging stopped .*the judge endpoint {url} cannot be reached") as ei:
        judge(PREDS, RECS, base_url=url, cache_dir=tmp_path / "c", out_path=tmp_path / "judge.jsonl", **FAST)
    assert time.time() - t0 < 3 and ei.value.fatal
    from emosum import pipeline as P
    cfg, rd, recs = _judge_run_setup(tmp_path)
    with pytest.raises(JudgeError, match="cannot be reached"):
        judge_run(rd, base_url=url, cache_dir=tmp_path / "c", max_retries=5)
    j = json.loads((rd / "judge.json").read_text())
    assert j["status"] == "failed" and url in j["error"] and j["es_score"] is None
    h = P.headline(rd)
    assert h["es_score"] is None and url in h["judge_error"] and f"ES judge: FAILED: judging stopped" in P.summary(rd)


def test_unknown_host_fails_at_once(tmp_path, monkeypatch):
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"): monkeypatch.delenv(k, raising=False)
    t0 = time.time()
    with pytest.raises(JudgeError, match=r"the judge endpoint http://judge\.invalid/v1 cannot be reached"):
        judge(PREDS, RECS[:1], base_url="http://judge.invalid/v1", cache_dir=tmp_path, **FAST)
    assert time.time() - t0 < 10


def test_wrong_key_or_model_stops_at_once(tmp_path):
    with JudgeServer(default=Reply(status=401)) as srv:
        with pytest.raises(JudgeError, match=r"refused the request \(HTTP 401.*check the API key"):
            run(srv, tmp_path, recs=[_rec(i) for i in range(6)], preds=[{**PREDS[0], "id": i} for i in range(6)])
        assert srv.count == 1              # not retried, and no other record is tried


def test_time_budget_bounds_the_judging(tmp_path):
    recs = [_rec(i) for i in range(6)]
    preds = [{"id": i, "status": "ok", "fields": {f: f"p{i}" for f in ES_FIELDS}} for i in range(6)]
    with JudgeServer(default=Reply(valid_judgement(3), delay=0.4)) as srv:
        s, secs = run(srv, tmp_path, preds=preds, recs=recs, time_budget=0.5)
        assert srv.count <= 3 and secs < 2.5
    assert s["status"] == "incomplete" and s["counts"]["error"] >= 3 and "time budget of 0.5 s" in s["error"]


def test_judge_run_fails_when_judgements_are_missing(tmp_path):
    "Some judgements failed: judge.json says incomplete, and the step raises (so the run's status and exit code say so)."
    cfg, rd, recs = _judge_run_setup(tmp_path)
    bad = f"{recs[0].causes[:60]}"          # every request about the first record fails
    def flaky(body):
        return Reply(status=500, headers=RETRY_SOON) if bad in body["messages"][0]["content"] else Reply(valid_judgement(4))
    with JudgeServer(default=flaky) as srv:
        with pytest.raises(JudgeError, match=r"1 of \d+ judgements failed .*this step fails; rerun"):
            judge_run(rd, base_url=srv.url, api_key="k", cache_dir=tmp_path / "c", max_retries=1, workers=1)
    j = json.loads((rd / "judge.json").read_text())
    assert j["status"] == "incomplete" and j["counts"]["error"] == 1
    from emosum import pipeline as P
    assert P.headline(rd)["es_score"] is None and "judgements failed" in P.headline(rd)["judge_error"]
