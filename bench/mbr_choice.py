"""Minimum Bayes risk choice on the CPU: ROUGE per pair of texts (the old path) against cached tokens (the new path).

`emosum.inference.mbr_choice` compares, per field, every sampled value with every other one: n(n-1)/2 ROUGE scores
per field and record. The old path scored each pair with rouge_score's `RougeScorer.score` (what
`emosum.evaluation.rouge` called until round 9), which tokenizes and stems both texts every time; the new path
(`_agreements` -> `rouge`) tokenizes each text once (cached) and scores the pair with rouge_score's own functions. Both run here side by side, row after row, on the stored answers of a cross-validation
that sampled them (`predictions.jsonl` rows with `mbr.answers`), each row's caches cleared first so that neither
path reuses the other's work; every field's agreement totals must come out equal.

    python bench/mbr_choice.py --predictions runs/qwen0.5b-lora-aux-mbr64/predictions.jsonl --rows 10

Writes bench/results/mbr_choice_<date>.json (machine, versions, command, seconds per row for both paths).
"""
from __future__ import annotations
import argparse, datetime, importlib.metadata as md, json, os, platform, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def old_agreements(vals: list[str], language: str, metric: str) -> list[float]:
    "The path before round 9: `RougeScorer.score` (tokenize + stem both texts, then score) for every pair."
    from emosum.evaluation import _rouge_scorer
    total, scorer = [0.0] * len(vals), _rouge_scorer(language)
    for a in range(len(vals)):
        for b in range(a + 1, len(vals)):
            x, y = sorted((vals[a], vals[b]))
            s = scorer.score(y, x)[metric].fmeasure; total[a] += s; total[b] += s
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", required=True, help="a predictions.jsonl whose rows hold sampled answers (mbr.answers)")
    ap.add_argument("--rows", type=int, default=10, help="rows to time (the first ones)")
    ap.add_argument("--out", default=None, help="results file (default bench/results/mbr_choice_<date>.json)")
    a = ap.parse_args(argv)
    from emosum.data import read_jsonl
    from emosum.evaluation import _rouge_tokens
    from emosum.inference import _agreements, _pair_rouge
    from emosum.prompts import parse_summary
    from emosum.vocab import TASK_FIELDS
    rows = [r for r in read_jsonl(a.predictions) if (r.get("mbr") or {}).get("answers")][:a.rows]
    if not rows: raise SystemExit(f"{a.predictions}: no row holds sampled answers (generate with mbr_samples > 1)")
    per_row = []
    for r in rows:
        parsed = [parse_summary(x).fields or {} for x in r["mbr"]["answers"]]
        fields = [[v for v in (str(p.get(f) or "") for p in parsed) if v.strip()] for f in TASK_FIELDS["es"]]
        t0 = time.perf_counter(); old = [old_agreements(v, "en", "rougeL") for v in fields]; t_old = time.perf_counter() - t0
        _pair_rouge.cache_clear(); _rouge_tokens.cache_clear()
        t0 = time.perf_counter(); new = [_agreements(v, "en", "rougeL") for v in fields]; t_new = time.perf_counter() - t0
        if old != new: raise SystemExit(f"row {r['id']}: the two paths disagree")
        per_row.append(dict(id=r["id"], answers=len(r["mbr"]["answers"]), pairs=sum(len(v) * (len(v) - 1) // 2 for v in fields),
                            old_s=round(t_old, 3), new_s=round(t_new, 3)))
        print(f"row {r['id']}: {per_row[-1]['pairs']} pairs, old {t_old:.2f} s, new {t_new:.2f} s, x{t_old / t_new:.1f}", flush=True)
    old_s, new_s = sum(p["old_s"] for p in per_row), sum(p["new_s"] for p in per_row)
    versions = {p: md.version(p) for p in ("rouge-score", "nltk")}
    res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command="python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
               machine=dict(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count()),
               versions=versions, predictions=str(a.predictions), rows=per_row, equal=True,
               total=dict(old_s=round(old_s, 2), new_s=round(new_s, 2), speedup=round(old_s / new_s, 2)))
    out = Path(a.out or ROOT / "bench" / "results" / f"mbr_choice_{datetime.date.today()}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"old {old_s:.1f} s, new {new_s:.1f} s: x{old_s / new_s:.2f} -> {out}")


if __name__ == "__main__":
    main()
