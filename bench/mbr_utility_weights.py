"""How much meaning to weigh in minimum Bayes risk: ROUGE-L agreement + w x embedding agreement, for a range of w.

`mbr_utility = rougeL` chooses each field's value by its summed ROUGE-L against the other sampled values, and
`rougeL+semsim` adds the summed cosine of their sentence embeddings (weight 1). Chapter 08 found the first best on
ROUGE-L and the second best on similarity. This script traces the choices in between, on the stored answers of a
pooled or single cross-validation (`predictions.jsonl` rows with `mbr.answers`), in two steps:

    # 1. per record and field, every candidate value's two agreement totals and its ROUGE-L and similarity against the
    #    reference (embeddings: a GPU makes this minutes; 2 CPU cores take long; written as it goes, a rerun resumes)
    python bench/mbr_utility_weights.py collect --predictions runs/qwen0.5b-lora-aux-mbr-pool4-128/predictions.jsonl \\
        --data ../shared/data/longemotion_es/es_dev.jsonl --out table.json.gz
    # 2. the choice and its scores for each w (instant), and w chosen out of fold: for each fold, the w that the other
    #    folds' records score best with (the most ROUGE-L among the w whose similarity reaches --min-semsim)
    python bench/mbr_utility_weights.py analyse --table table.json.gz --out bench/results/mbr_utility_weights.json

The choice is `mbr_choice`'s (the same candidates, `_agreements`' totals, ties to the earlier answer), so w = 0 and
w = 1 reproduce the `rougeL` and `rougeL+semsim` pools' scores: `analyse` prints both for checking.
"""
from __future__ import annotations
import argparse, datetime, gzip, importlib.metadata as md, json, os, platform, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def collect(a):
    import numpy as np
    from tqdm.auto import tqdm
    from emosum.data import load_records, read_jsonl
    from emosum.evaluation import _text, embed, record_targets, rouge
    from emosum.inference import _agreements, _cosine_totals, _field_candidates
    from emosum.prompts import parse_summary
    from emosum.vocab import TASK_FIELDS, record_language
    recs = {str(r.id): r for r in load_records(a.data)}
    partial = Path(str(a.out) + ".partial.jsonl")       # one line per record as it is done: a rerun resumes
    done = {str(r["id"]) for r in read_jsonl(partial, torn_tail="truncate")} if partial.is_file() else set()
    rows, t0 = read_jsonl(a.predictions), time.time()
    with open(partial, "a", encoding="utf-8") as fh:
        for p in tqdm([p for p in rows if str(p["id"]) not in done], desc="records"):
            rec = recs[str(p["id"])]
            lang, refs = record_language(rec), record_targets(rec, "es")
            parsed = [parse_summary(x, "es") for x in p["mbr"]["answers"]]
            usable = [i for i, q in enumerate(parsed) if q.fields]
            fields = {}
            for f in TASK_FIELDS["es"]:
                filled, vals = _field_candidates(parsed, usable, f)       # mbr_choice's own candidates
                texts = [vals[i] for i in filled]
                if not texts: fields[f] = None; continue
                e = embed(texts)                                           # once: agreement and similarity both
                ref = embed([refs[f]])[0] if refs[f].strip() else None
                fields[f] = dict(idx=filled, rougeL_total=_agreements(texts, lang, "rougeL"), semsim_total=_cosine_totals(e),
                                 rougeL=[rouge(_text(t), refs[f], lang)["rougeL"] for t in texts],
                                 semsim=[0.0 if ref is None else float(np.clip(x @ ref, 0, 1)) for x in e])
            empty = {f: dict(rougeL=0.0, semsim=0.0) for f in TASK_FIELDS["es"]}   # a field empty in every answer scores 0
            fh.write(json.dumps(dict(id=p["id"], fold=p.get("fold"), fields=fields, empty=empty)) + "\n"); fh.flush()
    by_id = {str(r["id"]): r for r in read_jsonl(partial)}
    out = [by_id[str(p["id"])] for p in rows]
    with gzip.open(a.out, "wt", encoding="utf-8") as fh:
        json.dump(dict(predictions=str(a.predictions), seconds=round(time.time() - t0, 1), rows=out), fh)
    partial.unlink()
    print(f"wrote {a.out}: {len(out)} records, {time.time() - t0:.0f} s")


def _scores(rows, w: float):
    "Per record: mean ROUGE-L and similarity over the fields of the choice at weight w (ties: the earlier answer)."
    from emosum.inference import _best
    per = []
    for r in rows:
        rl, ss = [], []
        for f, c in r["fields"].items():
            if c is None: rl.append(r["empty"][f]["rougeL"]); ss.append(r["empty"][f]["semsim"]); continue
            tot = [x + w * y for x, y in zip(c["rougeL_total"], c["semsim_total"])] if w else c["rougeL_total"]
            best = c["idx"].index(_best(c["idx"], tot))                   # mbr_choice's pick, ties to the earlier answer
            rl.append(c["rougeL"][best]); ss.append(c["semsim"][best])
        per.append((sum(rl) / len(rl), sum(ss) / len(ss)))
    return per


def analyse(a):
    import numpy as np
    with gzip.open(a.table, "rt", encoding="utf-8") as fh: table = json.load(fh)
    rows, ws = table["rows"], [float(x) for x in a.weights.split(",")]
    per_w = {w: _scores(rows, w) for w in ws}
    mean = lambda xs, k: float(np.mean([x[k] for x in xs]))
    grid = [dict(w=w, rougeL=round(mean(per_w[w], 0), 6), semsim=round(mean(per_w[w], 1), 6)) for w in ws]
    for g in grid: print(f"w={g['w']:<5} ROUGE-L {g['rougeL']:.4f}  similarity {g['semsim']:.4f}")
    folds = sorted({r["fold"] for r in rows})
    if None in folds: raise SystemExit("the rows carry no fold: analyse needs a CV's (or pool's) out-of-fold predictions")
    oof, picked = [None] * len(rows), {}
    for k in folds:
        inside = [i for i, r in enumerate(rows) if r["fold"] != k]
        fit = {w: (np.mean([per_w[w][i][0] for i in inside]), np.mean([per_w[w][i][1] for i in inside])) for w in ws}
        ok = [w for w in ws if fit[w][1] >= a.min_semsim]
        w = max(ok, key=lambda w: (fit[w][0], -w)) if ok else max(ws, key=lambda w: fit[w][1])
        picked[k] = w
        for i, r in enumerate(rows):
            if r["fold"] == k: oof[i] = per_w[w][i]
    rl, ss = np.array([x[0] for x in oof]), np.array([x[1] for x in oof])
    rng = np.random.default_rng(0)
    boot = rng.integers(0, len(rows), (1000, len(rows)))
    ci = lambda v: [round(float(np.percentile(v[boot].mean(1), 2.5)), 6), round(float(np.percentile(v[boot].mean(1), 97.5)), 6)]
    res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command="python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               machine=dict(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count()),
               versions={p: md.version(p) for p in ("numpy", "rapidfuzz", "rouge-score")},
               table=a.table, collected_from=table["predictions"], collect_seconds=table.get("seconds"),
               records=len(rows), min_semsim=a.min_semsim, grid=grid, picked_per_fold={str(k): v for k, v in picked.items()},
               out_of_fold=dict(rougeL=round(float(rl.mean()), 6), rougeL_ci=ci(rl), semsim=round(float(ss.mean()), 6), semsim_ci=ci(ss)))
    print(f"w chosen on the other folds: {picked}; out of fold: ROUGE-L {rl.mean():.4f} {ci(rl)}, similarity {ss.mean():.4f} {ci(ss)}")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1) + "\n"); print(f"-> {a.out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="every candidate's agreement totals and scores (embeddings: a GPU helps)")
    c.add_argument("--predictions", required=True); c.add_argument("--data", required=True); c.add_argument("--out", required=True)
    n = sub.add_parser("analyse", help="the choice at each weight, and the weight chosen out of fold")
    n.add_argument("--table", required=True)
    n.add_argument("--weights", default="0,0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,1.5,2")
    n.add_argument("--min-semsim", type=float, default=0.55, help="the similarity a weight must reach on the other folds")
    n.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    collect(a) if a.cmd == "collect" else analyse(a)


if __name__ == "__main__":
    main()
