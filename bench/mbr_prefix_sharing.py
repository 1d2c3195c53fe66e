"""Minimum Bayes risk's sampled answers share their prompt: does sharing its KV cache make generation faster?

With `mbr_samples = K`, `emosum.inference.generate` queues each record's prompt K times, side by side. The continuous
engine's two cache layouts treat those copies differently:
  * contiguous  one cache block per request, as long as the longest; attention reads each request's keys in place.
                Each copy's prompt is prefilled again (K prefills of ~3,400 tokens a record on the dev file).
  * paged       blocks of 256 tokens with transformers' block sharing (`allow_block_sharing`): once a copy's full
                prompt blocks are computed, later copies reference them (`search_prefix_match`), so a record's prompt
                is prefilled about once; attention gathers each request's keys from its blocks every step.
This times both, one after the other in one process, on the same prompts, sampling settings and seed, with
`emosum.inference.generate_continuous` (the engine `generate` runs), on real weights (default: the embedded
Qwen2.5-Coder-0.5B, the profile qwen2.5-0.5b-lora's base) and on the exact Qwen2-7B architecture with random weights
(answers run to --new tokens: random weights have no reason to stop). Per layout it records seconds, new tokens,
tokens/s, the prompt tokens the engine took from the shared cache instead of computing (transformers' own counter),
peak GPU memory and the plan (blocks, concurrency); for real weights, how many answers parse. Results go to
bench/results/mbr_prefix_sharing_<date>.json with the machine, versions and command.

With `--concurrency 128,256` it also measures each limit on the requests decoded together (gen_batch_size).

    python bench/mbr_prefix_sharing.py --data ../shared/data/longemotion_es/es_dev.jsonl                  # one H200: ~2 min
    python bench/mbr_prefix_sharing.py --data ... --records 4 --samples 64 --records-7b 0 --layouts contiguous --concurrency 128,256
    python bench/mbr_prefix_sharing.py --tiny --cpu                                                       # seconds: the code path
"""
from __future__ import annotations
import argparse, contextlib, datetime, gc, json, sys, time, traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
from train_throughput import QWEN2_7B, build_random_qwen2, machine_info, log, is_oom  # noqa: E402
from generate_throughput import load_prompts, timed  # noqa: E402


@contextlib.contextmanager
def shared_prefix_counter():
    """A list that collects, while the block is open, the prompt tokens each request took from shared blocks: what
    transformers' `search_prefix_match` returns (the paged cache's own counter lives inside the engine, out of reach)."""
    from transformers.generation.continuous_batching.cache import PagedAttentionCache
    seen, real = [], PagedAttentionCache.search_prefix_match
    def counted(self, request_id, prompt_ids):
        n = real(self, request_id, prompt_ids); seen.append(n); return n
    PagedAttentionCache.search_prefix_match = counted
    try: yield seen
    finally: PagedAttentionCache.search_prefix_match = real


def prompts_for(data: Path, tok, records: int, samples: int, max_length: int, new: int) -> list[list[int]]:
    "The first `records` records' prompts (`load_prompts`: the `benchmark` template), each `samples` times side by side, as generate queues them."
    return [p for p in load_prompts(data, tok, records, max_length, new)[1] for _ in range(samples)]


def measure(model, tok, prompts, new, layouts, label, device, a, stop, counter, keep, parse=False):
    "Each layout (and concurrency) on the same prompts and seed: seconds, tokens, shared prompt tokens, memory, plan; `keep(row)` as each ends."
    from emosum.inference import continuous_plan, generate_continuous
    from emosum.prompts import parse_summary
    lens = [len(p) for p in prompts]
    warm = [prompts[0][:512]] * 2
    for layout in layouts:   # each layout's kernels and allocations once, untimed, so the first timed layout pays nothing extra
        generate_continuous(model, tok, warm, max_new_tokens=4, stop_ids=stop, plan=continuous_plan(model, [512] * 2, 4, layout=layout))
    rows = []
    for layout, conc in [(l, c) for l in layouts for c in a.concurrency]:
        row = dict(label=label, layout=layout, max_concurrency=conc, prompts=len(prompts), samples=a.samples,
                   records=len(prompts) // a.samples, prompt_tokens=sum(lens), prompt_tokens_mean=round(sum(lens) / len(lens)),
                   max_new_tokens=new)
        try:
            plan = continuous_plan(model, lens, new, conc, a.memory_fraction, layout=layout)
            row.update({k: plan[k] for k in ("concurrency", "block_size", "num_blocks", "cache_gib", "max_batch_tokens")})
            torch.manual_seed(a.seed); counter.clear()
            res, secs, peak = timed(device, lambda: generate_continuous(model, tok, prompts, max_new_tokens=new, do_sample=True,
                                                                       temperature=0.7, top_p=0.9, stop_ids=stop, plan=plan))
            toks = sum(k for _, k in res)
            row.update(seconds=round(secs, 2), new_tokens=toks, tokens_per_s=round(toks / secs, 1), peak_gib=peak,
                       shared_prompt_tokens=sum(counter), shared_share=round(sum(counter) / sum(lens), 3))
            if parse: row["parsed"] = sum(parse_summary(t, "es").status in ("ok", "repaired") for t, _ in res)
        except Exception as e:
            row["error"] = ("OOM: " if is_oom(e) else "") + f"{type(e).__name__}: {str(e)[:300]}"
            if not is_oom(e): traceback.print_exc()
        log(row); rows.append(row); keep(row)
    done = [r for r in rows if "seconds" in r]
    if len(done) > 1:   # each measurement's speed against the first's
        rows.append(dict(label=label, speedup_over_first={f"{r['layout']}@{r['max_concurrency']}": round(done[0]["seconds"] / r["seconds"], 2)
                                                          for r in done[1:]})); log(rows[-1]); keep(rows[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "longemotion_es" / "es_dev.jsonl"))
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct", help="real weights ('none' to skip)")
    ap.add_argument("--records", type=int, default=8, help="records (real weights)")
    ap.add_argument("--records-7b", type=int, default=2, help="records on the 7B shape (0 to skip it)")
    ap.add_argument("--samples", type=int, default=16, help="answers a record (mbr_samples)")
    ap.add_argument("--new", type=int, default=512, help="max new tokens, real weights (the profile's)")
    ap.add_argument("--new-7b", type=int, default=128, help="new tokens on the 7B shape (each answer runs to it)")
    ap.add_argument("--max-length", type=int, default=8192)
    ap.add_argument("--layouts", default="contiguous,paged")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[128],
                    help="max requests decoded together (the GPU profiles' gen_batch_size); a comma list measures each")
    ap.add_argument("--memory-fraction", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tiny", action="store_true", help="the tiny Qwen2 and the bundled sample (a dry run)")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    device = "cpu" if a.cpu or not torch.cuda.is_available() else "cuda"
    layouts = [x for x in a.layouts.split(",") if x]
    data = ROOT / "data" / "sample_es.jsonl" if a.tiny else Path(a.data)
    if not data.is_file(): raise SystemExit(f"{data} not found: pass --data <ES records>, or --tiny")
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), device=device,
               command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]), machine=machine_info(device),
               data=str(data), settings=vars(a), runs=[])
    t0 = time.time()
    path = Path(a.out or ROOT / "bench" / "results" / f"mbr_prefix_sharing_{datetime.date.today()}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    def keep(row):   # written after every measurement: a run cut short keeps what it measured
        out["runs"].append(row); out["seconds"] = round(time.time() - t0, 1)
        path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    name = "embedded:tiny-qwen2" if a.tiny else a.model
    from emosum.config import load_tokenizer
    from emosum.inference import load_model_and_tokenizer
    from emosum.prompts import end_of_turn_ids
    with shared_prefix_counter() as counter:   # transformers' method is put back when the block ends
        if name != "none":
            model, tok = load_model_and_tokenizer(name, None, compute_dtype="bfloat16" if device == "cuda" else "float32",
                                                  device_map={"": 0} if device == "cuda" else {"": "cpu"})
            new = 8 if a.tiny else a.new
            ps = prompts_for(data, tok, 2 if a.tiny else a.records, a.samples, 1024 if a.tiny else a.max_length, new)
            measure(model, tok, ps, new, layouts, f"{name} (real weights)", device, a, end_of_turn_ids(tok), counter, keep, parse=True)
            del model; gc.collect(); torch.cuda.empty_cache() if device == "cuda" else None
        if a.records_7b and not a.tiny:
            tok = load_tokenizer("embedded:qwen2.5-coder-0.5b-instruct")   # the Qwen2 vocabulary
            model = build_random_qwen2(QWEN2_7B, "none", device).eval(); model.config.use_cache = True
            ps = prompts_for(data, tok, a.records_7b, a.samples, a.max_length, a.new_7b)
            measure(model, tok, ps, a.new_7b, layouts, "Qwen2-7B shape, random weights, bf16", device, a, [], counter, keep)
            del model; gc.collect(); torch.cuda.empty_cache() if device == "cuda" else None
    out["seconds"] = round(time.time() - t0, 1)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {path} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
