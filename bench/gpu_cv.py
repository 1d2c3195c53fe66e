"""Cross-validate the recipes of chapter 08 (`emosum.experiments.RECIPES`) on a GPU machine, several at once.

Each recipe is its documented `emosum cv` command (`recipe_command`), run as a subprocess with its folds side by side
(`--jobs`); recipes are spread over the GPUs present (CUDA_VISIBLE_DEVICES, round robin) and `--per-gpu` of them run
on a GPU at a time. Extra `emosum run` jobs (`--run NAME=PROFILE[,key=value...]`) train adapters on the whole records
file beside them (the shipped default adapter is made this way). Past `--deadline` seconds whatever is still going is
interrupted; the same command resumes it (every fold run resumes, finished ones are kept).

Writes a results file (machine, versions, commands, per recipe: status, seconds, leaderboard row) and, with --tar, a
tarball of the CV folders' small files (cv.json, metrics.json, out-of-fold predictions, fold run.json / metrics.json)
and the extra runs' adapters, to commit the table from.

    python bench/gpu_cv.py --data ../shared/data/longemotion_es/es_dev.jsonl --recipes smollm2-zs,smollm2-r64-lr2e-4-3ep
    python bench/gpu_cv.py --data ... --recipes all --gpus 0,1 --per-gpu 3 --jobs 5 --deadline 540 --out cv.json --tar cv.tgz
    python bench/gpu_cv.py --collect-only --root runs --recipes all --out cv.json
"""
from __future__ import annotations
import argparse, datetime, json, os, shlex, signal, subprocess, sys, tarfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
from gpu_pipeline import emosum_cmd, machine  # noqa: E402
from emosum.experiments import RECIPES, recipe_command, cv_summary  # noqa: E402

SMALL = ("cv.json", "metrics.json", "predictions.jsonl", "profile.json", "run.json", "train_log.csv", "metrics_per_record.csv",
         "train_log.jsonl",
         "scores.jsonl", "copy.jsonl", "extractive.jsonl")   # per-record scores and the baselines: paired comparisons at home
# and each fold adapter's meta.json: which checkpoint training kept, and every evaluation (loss, generation metrics)
KEPT_FROM_ADAPTERS = ("meta.json",)


def cv_argv(name: str, data: str | None, jobs: int, sets=(), folds: int = 5, only: str | None = None) -> list[str]:
    "The recipe's documented `emosum cv` command as argv, with the records file, the fold parallelism and extra overrides."
    argv = shlex.split(recipe_command(name, folds, data_path=data))[1:]     # drop the leading "emosum"
    return [*emosum_cmd(), *argv, "--jobs", str(jobs), *(["--only-folds", only] if only else []), *[x for kv in sets for x in ("-p", kv)]]


def run_argv(spec: str) -> tuple[str, list[str]]:
    "NAME=PROFILE[,key=value...] -> (NAME, `emosum run` argv training and saving an adapter on the profile's records)."
    name, _, rest = spec.partition("=")
    profile, *kvs = rest.split(",")
    sets = [x for kv in kvs if kv for x in ("-p", kv.replace(";", ","))]    # a list value is written with ';' (a;b -> a,b)
    return name, [*emosum_cmd(), "run", "--profile", profile, "--name", name, "--steps", "01,03", "--no-progress", *sets]


def launch(jobs: list, gpus: list[str], per_gpu: int, root: Path, deadline: float | None) -> dict:
    """Run (name, argv) jobs, at most per_gpu per GPU; a job's log is root/<name>.log. Past the deadline (seconds) the
    process groups still running get SIGINT, then SIGKILL 20 s later. Returns {name: {cmd, gpu, rc, seconds}}."""
    env = {**os.environ, "EMOSUM_RUNS": str(root), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    pending, live, done, t0 = list(jobs), {}, {}, time.time()
    load = {g: 0 for g in gpus}
    while pending or live:
        while pending and min(load.values()) < per_gpu:
            name, argv = pending.pop(0)
            g = min(load, key=load.get); load[g] += 1
            log = open(root / f"{name}.log", "w")
            p = subprocess.Popen(argv, env={**env, "CUDA_VISIBLE_DEVICES": g}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            live[name] = (p, g, time.time())
            print(f"[{time.time() - t0:6.0f}s] start {name} on GPU {g}: {' '.join(argv)}", flush=True)
        time.sleep(2)
        for name, (p, g, ts) in list(live.items()):
            if p.poll() is None: continue
            del live[name]; load[g] -= 1
            done[name] = dict(cmd=" ".join(p.args), gpu=g, rc=p.returncode, seconds=round(time.time() - ts, 1))
            print(f"[{time.time() - t0:6.0f}s] {name}: exit {p.returncode} after {done[name]['seconds']} s", flush=True)
        if deadline and time.time() - t0 > deadline and live:
            for name, (p, g, ts) in live.items():
                os.killpg(p.pid, signal.SIGINT)
            time.sleep(20)
            for name, (p, g, ts) in live.items():
                if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                done[name] = dict(cmd=" ".join(p.args), gpu=g, rc=p.returncode, seconds=round(time.time() - ts, 1),
                                  interrupted=f"past the {deadline:.0f} s deadline; rerun the same command to resume")
            live.clear(); pending and print(f"not started (deadline): {[n for n, _ in pending]}", flush=True)
            for name, argv in pending: done[name] = dict(cmd=" ".join(argv), rc=None, not_started="deadline")
            pending = []
    return done


def collect(root: Path, names: list[str]) -> dict:
    "The leaderboard row of each finished CV folder, or why there is none."
    rows = {}
    for n in names:
        d = root / n
        try: rows[n] = cv_summary(d) if (d / "metrics.json").is_file() else {"missing": f"no {d}/metrics.json (unfinished)"}
        except Exception as e: rows[n] = {"error": f"{type(e).__name__}: {e}"}
    return rows


def tar_small(root: Path, names: list[str], runs: list[str], out: Path) -> list[str]:
    "CV folders' small files (no checkpoints, of the fold adapters only meta.json) and the extra runs' adapter + run files, into one .tgz."
    added = []
    with tarfile.open(out, "w:gz") as tf:
        for n in names:
            for f in sorted((root / n).rglob("*")) if (root / n).is_dir() else []:
                rel = f.relative_to(root)
                in_adapter = "adapter" in rel.parts
                if f.is_file() and "checkpoint" not in str(rel) and (f.name in KEPT_FROM_ADAPTERS if in_adapter else f.name in SMALL):
                    tf.add(f, arcname=str(rel)); added.append(str(rel))
            if (root / f"{n}.log").is_file(): tf.add(root / f"{n}.log", arcname=f"{n}.log")
        for n in runs:
            for f in sorted((root / n).rglob("*")) if (root / n).is_dir() else []:
                rel = f.relative_to(root)
                if f.is_file() and "checkpoint" not in str(rel) and (rel.parts[1:2] == ("adapter",) or f.name in SMALL):
                    tf.add(f, arcname=str(rel)); added.append(str(rel))
            if (root / f"{n}.log").is_file(): tf.add(root / f"{n}.log", arcname=f"{n}.log")
    return added


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="the records to cross-validate on (default: each profile's data_path)")
    ap.add_argument("--recipes", default="all", help=f"comma-separated names of emosum.experiments.RECIPES, or all ({', '.join(RECIPES)})")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=PROFILE[,key=value...]",
                    help="also train an adapter on the whole records file (emosum run, steps 01 and 03); list values with ';'")
    ap.add_argument("--gpus", default=None, help="GPU indices to spread over (default: all visible)")
    ap.add_argument("--per-gpu", type=int, default=3, help="recipes (and runs) at a time on one GPU")
    ap.add_argument("--jobs", type=int, default=5, help="fold runs side by side within a recipe")
    ap.add_argument("--folds", type=int, default=5, help="k (the committed results use 5)")
    ap.add_argument("--only-folds", default=None, metavar="I,J", help="run just these folds of every recipe (emosum cv --only-folds); "
                    "the rest in another lease with the same names: the finished folds are scored")
    ap.add_argument("--root", default=None, help="runs folder (default: $EMOSUM_RUNS or runs/)")
    ap.add_argument("--deadline", type=float, default=None, help="seconds after which unfinished work is interrupted (resumable)")
    ap.add_argument("-p", "--set", action="append", default=[], metavar="KEY=VALUE", help="profile override for every recipe and run "
                    "(e.g. a dry run on the CPU: -p model=embedded:tiny-qwen2 -p compute_dtype=float32 -p quantization=none -p max_new_tokens=8)")
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--out", default=None, help="results JSON (default: bench/results/cv_<date>.json)")
    ap.add_argument("--tar", default=None, help="also write the CV folders' small files and the runs' adapters to this .tgz")
    a = ap.parse_args(argv)
    names = list(RECIPES) if a.recipes == "all" else [n for n in a.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown: raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    root = Path(a.root or os.environ.get("EMOSUM_RUNS") or ROOT / "runs").resolve(); root.mkdir(parents=True, exist_ok=True)
    data = str(Path(a.data).resolve()) if a.data else None
    extra = [run_argv(s) for s in a.run]
    extra = [(n, [*argv, *(["-p", f"data_path={data}"] if a.data else []), *[x for kv in a.set for x in ("-p", kv)]]) for n, argv in extra]
    t0 = time.time()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": machine(), "data": data, "recipes": {n: {"command": recipe_command(n, data_path=a.data)} for n in names},
              "runs": {n: {"command": " ".join(argv)} for n, argv in extra}}
    if not a.collect_only:
        import torch
        gpus = a.gpus.split(",") if a.gpus else [str(i) for i in range(max(1, torch.cuda.device_count()))]
        done = launch([(n, cv_argv(n, data, a.jobs, a.set, a.folds, a.only_folds)) for n in names] + extra, gpus, a.per_gpu, root, a.deadline)
        for n, st in done.items(): (result["recipes"] if n in result["recipes"] else result["runs"])[n].update(st)
    for n, row in collect(root, names).items(): result["recipes"][n]["leaderboard"] = row
    result["seconds"] = round(time.time() - t0, 1)
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"cv_{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if a.tar: print(f"tar: {len(tar_small(root, names, [n for n, _ in extra], Path(a.tar)))} files -> {a.tar}")
    print(f"wrote {out} ({result['seconds']} s)")
    for n, r in result["recipes"].items():
        lb = r.get("leaderboard", {})
        print(f"  {n:<36} rc={r.get('rc')} {r.get('seconds', '-')} s  ROUGE-L {lb.get('rougeL')}  semsim {lb.get('semsim')}  parsed {lb.get('json_parsed')}")
    return result


if __name__ == "__main__":
    main()
