"""The user's path on a GPU, end to end and repeatable: `emosum run` (notebooks 01-06 through papermill) for the
one-GPU profiles, fine-tuned and zero-shot, plus a run with a separate test file, then `emosum compare` of each pair.

    python bench/gpu_pipeline.py --data ../shared/data/longemotion_es/es_dev.jsonl          # all five runs, 5 at a time
    python bench/gpu_pipeline.py --data ... --runs smollm2-ft,smollm2-zs --jobs 2           # a subset
    python bench/gpu_pipeline.py --collect-only --root runs                                  # re-read finished runs

Each run is a plain `emosum run` command (printed, and recorded in the results file); the small models leave most of
an H200 idle, so the runs go side by side (`--jobs`). Results: `bench/results/gpu_pipeline_<date>.json` with the
machine, versions, commands, per-step seconds, training / generation seconds and metrics (overall and per field, 95%
CIs, JSON valid / repaired / failed, the copy and extractive baselines), and a Markdown table for the README.
"""
from __future__ import annotations
import argparse, datetime, json, os, platform, random, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect")

# name -> (profile, extra `emosum run` arguments); DATA / TRAIN / TEST are filled in from --data
RUNS = {
    "smollm2-ft": ("smollm2-gpu", []),
    "smollm2-zs": ("smollm2-gpu", ["--skip", "training"]),
    "qwen-ft": ("qwen2.5-0.5b-qlora", []),
    "qwen-zs": ("qwen2.5-0.5b-qlora", ["--skip", "training"]),
    "smollm2-test": ("smollm2-gpu", ["-P", "split=test", "--skip", "training"]),   # a separate test file (zero-shot, to save GPU time)
}
PAIRS = [("smollm2-zs", "smollm2-ft"), ("qwen-zs", "qwen-ft")]


def emosum_cmd() -> list[str]:
    exe = Path(sys.executable).parent/"emosum"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from emosum.pipeline import main; sys.exit(main())"]


def split_test_file(data: Path, out_dir: Path, n_test: int, seed: int = 0) -> tuple[Path, Path]:
    "Write `data` as two files (train+valid pool, test) by a seeded draw of ids, so the test run predicts unseen records."
    lines = [l for l in data.read_text(encoding="utf-8").split("\n") if l.strip()]
    idx = list(range(len(lines))); random.Random(seed).shuffle(idx)
    test = set(idx[:n_test])
    out_dir.mkdir(parents=True, exist_ok=True)
    a, b = out_dir/f"{data.stem}.pool.jsonl", out_dir/f"{data.stem}.test.jsonl"
    a.write_text("".join(lines[i] + "\n" for i in range(len(lines)) if i not in test), encoding="utf-8")
    b.write_text("".join(lines[i] + "\n" for i in sorted(test)), encoding="utf-8")
    return a, b


def command(name: str, args, data: Path, pool: Path, test: Path) -> list[str]:
    profile, extra = RUNS[name]
    paths = ["-p", f"data_path={pool}", "-p", f"test_path={test}"] if name.endswith("-test") else ["-p", f"data_path={data}"]
    sets = [x for kv in args.set for x in ("-p", kv)] + [x for kv in args.param for x in ("-P", kv)]
    return [*emosum_cmd(), "run", "--profile", profile, *paths, *sets, *extra, "--name", f"{args.prefix}{name}", "--no-progress"]


def run_all(names, args, data, pool, test, root: Path) -> dict:
    """Start the runs, at most `args.jobs` at a time; each logs to runs/<name>.log. Returns {name: {cmd, rc, seconds}}.
    Past `args.deadline` seconds the runs still going are interrupted (they resume with the same command)."""
    env = {**os.environ, "EMOSUM_RUNS": str(root), "PYTHONUNBUFFERED": "1"}
    pending, live, done, t_start = list(names), {}, {}, time.time()
    while pending or live:
        if args.deadline and time.time() - t_start > args.deadline:
            for n, (p, t0, cmd, log) in live.items():
                p.send_signal(2)                                           # SIGINT: the step records "interrupted"
                try: p.wait(15)
                except subprocess.TimeoutExpired: p.kill()
                log.close()
                done[n] = {"cmd": " ".join(cmd), "rc": "deadline", "seconds": round(time.time() - t0, 1)}
            for n in pending: done[n] = {"cmd": " ".join(command(n, args, data, pool, test)), "rc": "not started"}
            print(f"deadline of {args.deadline} s reached: interrupted {list(live)}, not started {pending}", flush=True)
            break
        while pending and len(live) < args.jobs:
            n = pending.pop(0); cmd = command(n, args, data, pool, test)
            print("$", " ".join(cmd), flush=True)
            log = open(root/f"{args.prefix}{n}.log", "w")
            live[n] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), time.time(), cmd, log)
        time.sleep(2)
        for n, (p, t0, cmd, log) in list(live.items()):
            if p.poll() is None: continue
            log.close(); del live[n]
            done[n] = {"cmd": " ".join(cmd), "rc": p.returncode, "seconds": round(time.time() - t0, 1)}
            print(f"[{n}] exit {p.returncode} after {done[n]['seconds']} s", flush=True)
            if p.returncode: print((root/f"{args.prefix}{n}.log").read_text()[-3000:], flush=True)
    return done


def collect(rd: Path) -> dict:
    "What a finished run folder says: step status and seconds, metrics with CIs, baselines, model/adapter facts."
    out = {"run_dir": str(rd)}
    rj = rd/"run.json"
    if rj.exists():
        r = json.loads(rj.read_text())
        out.update(profile=r.get("profile"), status=r.get("status"), overrides=r.get("overrides"), params=r.get("params"),
                   steps={k: {"status": s.get("status"), "seconds": s.get("seconds")} for k, s in r.get("steps", {}).items()},
                   versions=r.get("versions"), git=r.get("git"))
        out["train_seconds"] = (r.get("steps", {}).get("03") or {}).get("seconds")
        out["generate_seconds"] = (r.get("steps", {}).get("04") or {}).get("seconds")
    mj = rd/"metrics.json"
    if mj.exists():
        m = json.loads(mj.read_text())
        keep = ("n", "status_counts", "json_valid_rate", "json_repaired_rate", "json_parsed_rate", "json_failed_rate", "overall", "per_field", "ci95")
        out["metrics"] = {k: m.get(k) for k in keep}
        out["baselines"] = {b: {k: (bm or {}).get(k) for k in ("overall", "per_field", "ci95")} for b, bm in (m.get("baselines") or {}).items()}
    log = rd/"train_log.jsonl"
    if log.exists():
        rows = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
        out["eval_loss"] = [r["eval_loss"] for r in rows if "eval_loss" in r]
        out["final_train_loss"] = next((r.get("loss") for r in reversed(rows) if r.get("loss") is not None), None)
    pj = rd/"predictions.jsonl"
    if pj.exists():
        rows = [json.loads(l) for l in pj.read_text().splitlines() if l.strip()]
        out["generation"] = {"records": len(rows), "new_tokens_mean": round(sum(r.get("new_tokens", 0) for r in rows) / max(len(rows), 1), 1),
                             "seconds_sum": round(sum(r.get("seconds", 0) for r in rows), 1)}
    return out


def fmt_ci(v, ci) -> str:
    return "-" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown(results: dict) -> str:
    "README table: per model, zero-shot vs fine-tuned (+ baselines), overall and per field ROUGE-L and semsim with 95% CIs."
    rows = ["| run | n | JSON valid / repaired / failed | ROUGE-L | semsim | train s | generate s |", "|---|---:|---|---:|---:|---:|---:|"]
    base_done = False
    for name, r in results.items():
        m = r.get("metrics")
        if not m: continue
        sc = m["status_counts"]; ci = (m.get("ci95") or {}).get("overall", {})
        rows.append(f"| {name} | {m['n']} | {sc.get('ok', 0)} / {sc.get('repaired', 0)} / {sc.get('failed', 0) + sc.get('error', 0)} | "
                    f"{fmt_ci(m['overall']['rougeL'], ci.get('rougeL'))} | {fmt_ci(m['overall']['semsim'], ci.get('semsim'))} | "
                    f"{r.get('train_seconds') or '-'} | {r.get('generate_seconds') or '-'} |")
        if not base_done and r.get("baselines") and not name.endswith("-test"):
            for b, bm in r["baselines"].items():
                bci = (bm.get("ci95") or {}).get("overall", {})
                rows.append(f"| baseline: {b} | {m['n']} | - | {fmt_ci(bm['overall']['rougeL'], bci.get('rougeL'))} | "
                            f"{fmt_ci(bm['overall']['semsim'], bci.get('semsim'))} | - | - |")
            base_done = True
    per = ["", "| run | " + " | ".join(FIELDS) + " |", "|---|" + "---:|" * len(FIELDS)]
    for name, r in results.items():
        m = r.get("metrics")
        if not m: continue
        pf, ci = m["per_field"], (m.get("ci95") or {}).get("per_field", {})
        per.append(f"| {name} ROUGE-L | " + " | ".join(fmt_ci(pf.get(f, {}).get("rougeL"), ci.get(f, {}).get("rougeL")) for f in FIELDS) + " |")
    return "\n".join(rows + per)


def machine() -> dict:
    info = {"host": platform.node(), "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.version.cuda,
                    gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    except Exception as e: info["torch_error"] = str(e)
    from importlib.metadata import version, PackageNotFoundError
    for p in ("transformers", "peft", "accelerate", "bitsandbytes", "papermill", "liger-kernel", "sentence-transformers"):
        try: info[p] = version(p)
        except PackageNotFoundError: info[p] = None
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent/"shared"/"data"/"longemotion_es"/"es_dev.jsonl"), help="the ES records (JSONL)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"which runs, from {', '.join(RUNS)}")
    ap.add_argument("--jobs", type=int, default=5, help="runs side by side")
    ap.add_argument("--prefix", default="gpu-", help="run names are <prefix><run>")
    ap.add_argument("--root", default=None, help="runs folder (default: $EMOSUM_RUNS or runs/)")
    ap.add_argument("--n-test", type=int, default=20, help="records held out as the separate test file of the *-test run")
    ap.add_argument("-p", "--set", action="append", default=[], metavar="KEY=VALUE", help="profile override for every run")
    ap.add_argument("-P", "--param", action="append", default=[], metavar="NAME=VALUE", help="notebook parameter for every run (e.g. n_samples=0)")
    ap.add_argument("--collect-only", action="store_true", help="only read the finished runs")
    ap.add_argument("--deadline", type=float, default=None, help="seconds after which unfinished runs are interrupted (results still written)")
    ap.add_argument("--out", default=None, help="results file (default: bench/results/gpu_pipeline_<date>.json)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown: ap.error(f"unknown runs {unknown}; choose from {list(RUNS)}")
    root = Path(args.root or os.environ.get("EMOSUM_RUNS") or ROOT/"runs").resolve(); root.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()
    if not data.is_file(): ap.error(f"--data {data} does not exist")
    pool, test = split_test_file(data, root/"_data", args.n_test)
    t0 = time.time()
    procs = {} if args.collect_only else run_all(names, args, data, pool, test, root)
    results = {n: {**collect(root/f"{args.prefix}{n}"), **procs.get(n, {})} for n in names}
    env = {**os.environ, "EMOSUM_RUNS": str(root)}
    comparisons = {}
    for a, b in PAIRS:
        if a in names and b in names and (root/f"{args.prefix}{a}"/"scores.jsonl").exists() and (root/f"{args.prefix}{b}"/"scores.jsonl").exists():
            r = subprocess.run([*emosum_cmd(), "compare", f"{args.prefix}{a}", f"{args.prefix}{b}"], cwd=ROOT, env=env, capture_output=True, text=True)
            comparisons[f"{a} -> {b}"] = r.stdout if r.returncode == 0 else f"exit {r.returncode}: {r.stderr[-2000:]}"
            print(f"\n$ emosum compare {args.prefix}{a} {args.prefix}{b}\n{comparisons[f'{a} -> {b}']}", flush=True)
    table = markdown(results)
    print("\n" + table, flush=True)
    out = Path(args.out) if args.out else ROOT/"bench"/"results"/f"gpu_pipeline_{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "wall_seconds": round(time.time() - t0, 1), "machine": machine(), "data": str(data),
                               "test_split": {"pool": str(pool), "test": str(test), "n_test": args.n_test},
                               "runs": results, "comparisons": comparisons, "markdown": table}, indent=2, default=str))
    print(f"results: {out}")
    return 0 if all(r.get("rc") == 0 for r in procs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
