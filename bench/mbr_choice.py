"""Minimum Bayes risk choice on the CPU: three ways to score every pair of sampled values, side by side.

`emosum.inference.mbr_choice` compares, per field, every sampled value with every other one: n(n-1)/2 ROUGE-L scores
per field and record, so 64 answers make about 10,000 pairs a record and 128 about 40,000. The paths timed here:

- `scorer` (until round 8): rouge_score's `RougeScorer.score` for every pair, which tokenizes and stems both texts
  every time and fills a Python LCS table;
- `cached` (round 9): each text tokenized once (`emosum.evaluation._rouge_tokens`), then rouge_score's own
  `_score_lcs` (the Python LCS table) for every pair;
- `matrix` (round 10, what `_agreements` does now): the cached tokens, every pair's LCS in one rapidfuzz
  `process.cdist` call (C++, bit-parallel), and rouge_score's F1 arithmetic over the whole table
  (`emosum.evaluation.rouge_l_matrix`).

They run row after row on a CV's stored answers (`predictions.jsonl` rows with `mbr.answers`), the caches cleared
before each path so that none reuses another's work; every field's agreement totals must come out equal to the last
bit, or the script stops.

    python bench/mbr_choice.py --predictions runs/qwen0.5b-lora-aux-mbr64/predictions.jsonl --rows 10

Writes bench/results/mbr_choice_<date>.json (machine, versions, command, seconds per row for every path).
"""
from __future__ import annotations
import argparse, datetime, importlib.metadata as md, json, os, platform, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pairs_summed(vals: list[str], score) -> list[float]:
    "Each value's summed score with the others, pairs in `agreement`'s orientation (the text that sorts first predicts)."
    total = [0.0] * len(vals)
    for a in range(len(vals)):
        for b in range(a + 1, len(vals)):
            x, y = sorted((vals[a], vals[b]))
            s = score(x, y); total[a] += s; total[b] += s
    return total


def scorer_agreements(vals: list[str], language: str) -> list[float]:
    "Until round 8: `RougeScorer.score` (tokenize + stem both texts, Python LCS table) for every pair."
    from emosum.evaluation import _rouge_scorer
    scorer = _rouge_scorer(language)
    return _pairs_summed(vals, lambda x, y: scorer.score(y, x)["rougeL"].fmeasure)


def cached_agreements(vals: list[str], language: str) -> list[float]:
    "Round 9: each text's tokens once, rouge_score's Python LCS table for every pair."
    from rouge_score import rouge_scorer as rs
    from emosum.evaluation import _rouge_tokens
    return _pairs_summed(vals, lambda x, y: rs._score_lcs(_rouge_tokens(y, language), _rouge_tokens(x, language)).fmeasure)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", required=True, help="a predictions.jsonl whose rows hold sampled answers (mbr.answers)")
    ap.add_argument("--rows", type=int, default=10, help="rows to time (the first ones)")
    ap.add_argument("--paths", default="scorer,cached,matrix", help="which paths to time (the slow ones can be left out)")
    ap.add_argument("--out", default=None, help="results file (default bench/results/mbr_choice_<date>.json)")
    a = ap.parse_args(argv)
    from emosum.data import read_jsonl
    from emosum.evaluation import _rouge_tokens
    from emosum.inference import _agreements, _pair_rouge
    from emosum.prompts import parse_summary
    from emosum.vocab import TASK_FIELDS
    paths = {"scorer": scorer_agreements, "cached": cached_agreements, "matrix": lambda v, lang: _agreements(v, lang, "rougeL")}
    use = [p for p in a.paths.split(",") if p]
    if not use or set(use) - set(paths): raise SystemExit(f"--paths: some of {', '.join(paths)}, got {a.paths!r}")
    rows = [r for r in read_jsonl(a.predictions) if (r.get("mbr") or {}).get("answers")][:a.rows]
    if not rows: raise SystemExit(f"{a.predictions}: no row holds sampled answers (generate with mbr_samples > 1)")
    per_row = []
    for r in rows:
        parsed = [parse_summary(x).fields or {} for x in r["mbr"]["answers"]]
        fields = [[v for v in (str(p.get(f) or "") for p in parsed) if v.strip()] for f in TASK_FIELDS["es"]]
        row, totals = dict(id=r["id"], answers=len(r["mbr"]["answers"]), pairs=sum(len(v) * (len(v) - 1) // 2 for v in fields)), {}
        for name in use:
            _pair_rouge.cache_clear(); _rouge_tokens.cache_clear()
            t0 = time.perf_counter(); totals[name] = [paths[name](v, "en") for v in fields]
            row[f"{name}_s"] = round(time.perf_counter() - t0, 4)
        if any(t != totals[use[0]] for t in totals.values()): raise SystemExit(f"row {r['id']}: the paths disagree")
        per_row.append(row)
        print(f"row {r['id']}: {row['pairs']} pairs, " + ", ".join(f"{n} {row[n + '_s']:.3f} s" for n in use), flush=True)
    total = {f"{n}_s": round(sum(p[f"{n}_s"] for p in per_row), 3) for n in use}
    if "matrix" in use: total.update({f"speedup_{n}": round(total[f"{n}_s"] / total["matrix_s"], 1) for n in use if n != "matrix"})
    versions = {p: md.version(p) for p in ("rouge-score", "nltk", "rapidfuzz", "numpy")}
    res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command="python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
               machine=dict(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count()),
               versions=versions, predictions=str(a.predictions), rows=per_row, equal=True, total=total)
    out = Path(a.out or ROOT / "bench" / "results" / f"mbr_choice_{datetime.date.today()}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"{total} -> {out}")


if __name__ == "__main__":
    main()
