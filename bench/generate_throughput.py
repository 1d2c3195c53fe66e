"""Generation throughput on one GPU: the padded path against continuous batching, on the same records.

Measures, side by side in one process and on the same prompts (the LongEmotion ES records of --data,
formatted with the project's `benchmark` template by emosum.prompts, tokenised with a Qwen2 tokenizer):
  * padded      emosum.inference.generate_batch: prompts left-padded to the longest, `model.generate`
                (SDPA with a padding mask), `batch` prompts per call (the old path; the profile's
                gen_batch_size, fewer if memory is short);
  * continuous  emosum.inference.generate_continuous: transformers' continuous batching over a paged KV
                cache, no padding between prompts, FlashAttention-2's varlen kernel (`paged|emosum_varlen`),
                the cache and the concurrency sized from free GPU memory;
on
  * the exact Qwen2-7B architecture with random weights (hidden 3584, intermediate 18944, 28 layers,
    28 heads, 4 KV heads, vocab 152,064, rope_theta 1e6; built on the GPU in bf16) with a random LoRA
    r=64 adapter on all seven projections, MERGED into the bf16 base, and UNMERGED on an NF4 base (each
    decoder Linear replaced by a bitsandbytes Linear4bit, as bench/train_throughput.py builds it);
    answers run to the full --new tokens (no stop token: random weights would stop anywhere);
    for --n reports (150 repeats the 100 dev records);
  * real weights (--model, e.g. embedded:smollm2-135m-instruct, embedded:qwen2.5-coder-0.5b-instruct):
    emosum.inference.generate end to end (stop tokens, parsing, predictions.jsonl appends) for
    --real-n reports, with how many greedy answers the two engines agree on.
Reports tokens/s (new tokens / wall seconds), seconds per report and peak GPU memory
(torch.cuda.max_memory_allocated), and writes bench/results/generate_<date>.json (machine, versions, command).

    python bench/generate_throughput.py --data ../shared/data/longemotion_es/es_dev.jsonl            # full (one H200: ~6-7 min)
    python bench/generate_throughput.py --data ... --quick                                            # ~3 min
    python bench/generate_throughput.py --tiny --cpu                                                  # seconds: every code path, CPU
"""
from __future__ import annotations
import argparse, dataclasses, datetime, gc, json, os, sys, tempfile, time, traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
from train_throughput import QWEN2_7B, TINY, build_random_qwen2, machine_info, log, is_oom  # noqa: E402

GiB = 2**30
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sync(device):
    if device == "cuda": torch.cuda.synchronize()


def reset_peak(device):
    gc.collect()
    if device == "cuda": torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def peak_gib(device):
    return round(torch.cuda.max_memory_allocated() / GiB, 2) if device == "cuda" else None


def load_prompts(data: Path, tok, n_max: int, max_length: int, new: int):
    "(records, prompt token ids) for the first n_max records of `data` (repeated when it holds fewer), benchmark template."
    from emosum.data import load_records
    from emosum.prompts import build_prompt
    recs = list(load_records(data))
    prompts = []
    for r in recs:
        p = build_prompt(r, tok, "es", "benchmark", max_length, new)
        if p.fits: prompts.append(p.input_ids)
        if len(prompts) == n_max: break            # enough: the rest are not tokenised
    if not prompts: raise SystemExit(f"no record of {data} fits max_length={max_length}")
    reps = -(-n_max // len(prompts))
    return recs, (prompts * reps)[:n_max]


def add_lora(model, r: int, merge: bool, seed: int = 0):
    "A random LoRA adapter (r, alpha 16, all seven projections, B != 0 so it changes the answers); merged into the base or not."
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, init_lora_weights=False,
                                             task_type="CAUSAL_LM"))
    if merge: model = model.merge_and_unload()
    return model.eval()


def timed(device, fn):
    reset_peak(device); sync(device); t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t, peak_gib(device)


def run_engines(model, tok, prompts, n_list, new, engines, label, device, a, deadline):
    "Both engines on the first n prompts, for each n (the padded one only for n in --padded-n, and only if its last rate says it ends in the budget)."
    from emosum.inference import generate_batch, generate_continuous, padded_batch_size, continuous_plan
    rows, rate = [], {}
    warm = [prompts[0][:256]]
    for eng in engines:   # CUDA context, cuBLAS handles and kernels warmed once per engine, untimed
        (generate_batch if eng == "padded" else generate_continuous)(model, tok, warm, max_new_tokens=4, stop_ids=[])
    for n in n_list:
        ps = prompts[:n]
        lens = [len(p) for p in ps]
        answers = {}
        for eng in engines:
            row = dict(label=label, engine=eng, n=n, new_tokens=new, prompt_tokens_mean=round(sum(lens) / n), prompt_tokens_max=max(lens))
            if eng == "padded" and n not in a.padded_n: continue
            est = rate.get(eng, 0) * n * (1 if eng == "padded" else 0.6)   # continuous batching scales better than linearly
            if time.time() + est > deadline:
                row["skipped"] = f"would end ~{time.time() + est - deadline:.0f}s past the --budget-s"; log(row); rows.append(row); continue
            try:
                if eng == "padded":
                    bs = padded_batch_size(model, lens, new, a.padded_batch, a.memory_fraction)
                    order = sorted(range(n), key=lambda i: -lens[i])         # longest first, as generate() does
                    def fn():
                        out = {}
                        for b in range(0, n, bs):
                            idx = order[b:b + bs]
                            for i, res in zip(idx, generate_batch(model, tok, [ps[i] for i in idx], max_new_tokens=new, stop_ids=[])): out[i] = res
                        return [out[i] for i in range(n)]
                    row["batch"] = bs
                else:
                    plan = continuous_plan(model, lens, new, a.concurrency, a.memory_fraction, layout=a.layout)
                    row.update(layout=plan["layout"], concurrency=plan["concurrency"], cache_gib=plan["cache_gib"], num_blocks=plan["num_blocks"], block_size=plan["block_size"])
                    fn = lambda: generate_continuous(model, tok, ps, max_new_tokens=new, stop_ids=[], plan=plan, cb_options=a.cb_options)
                res, secs, peak = timed(device, fn)
                toks = sum(k for _, k in res)
                answers[eng] = [t for t, _ in res]
                rate[eng] = secs / n
                row.update(seconds=round(secs, 2), tokens=toks, tokens_per_s=round(toks / secs, 1), s_per_report=round(secs / n, 3), peak_gib=peak)
            except Exception as e:
                row["error"] = ("OOM: " if is_oom(e) else "") + f"{type(e).__name__}: {str(e)[:300]}"
                if not is_oom(e): traceback.print_exc()
            log(row); rows.append(row)
        if len(answers) == 2:   # bf16 rounding differs between the two batch layouts, so this is information, not a check
            rows[-1]["same_text_as_padded"] = sum(x == y for x, y in zip(answers["padded"], answers["continuous"]))
    return rows


def profile_steps(model, tok, prompts, device, a, top=15):
    """Where the time goes: torch.profiler over a short continuous run (--profile-n prompts cut to 1,024 tokens, --profile-new
    tokens each), the ops with the most GPU (CPU run: CPU) self time, and how much of the wall time the GPU was busy."""
    from torch.profiler import profile, ProfilerActivity
    from emosum.inference import generate_continuous
    ps = [p[:1024] for p in prompts[:a.profile_n]]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sync(device); t = time.perf_counter()
    with profile(activities=acts) as prof:
        generate_continuous(model, tok, ps, max_new_tokens=a.profile_new, stop_ids=[], memory_fraction=a.memory_fraction)
        sync(device)
    wall = time.perf_counter() - t
    ev = list(prof.key_averages())
    gpu = lambda e: getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) / 1e3 if device == "cuda" else e.self_cpu_time_total / 1e3
    busy = sum(gpu(e) for e in ev) / 1e3
    ops = [dict(op=e.key[:80], calls=e.count, self_ms=round(gpu(e), 1), cpu_total_ms=round(e.cpu_time_total / 1e3, 1))
           for e in sorted(ev, key=lambda e: -gpu(e))[:top]]
    return dict(prompts=len(ps), prompt_tokens=1024, new_tokens=a.profile_new, wall_s_profiled=round(wall, 2),
                busy_s=round(busy, 2), busy_share=round(busy / wall, 3), per_step_ms=round(1e3 * wall / a.profile_new, 1), top_ops=ops)


def gpu_cap(device, gib):
    "Emulate a card of `gib` GiB: cap this process's share of the GPU (emosum's planner reads the cap); None lifts it."
    if device != "cuda": return None
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * GiB / total) if gib else 1.0)
    return gib


def run_random(arch, variant, tok, prompts, n_list, new, device, a, deadline):
    "Random Qwen2 weights + a random LoRA r: 'bf16-merged' (merged into the bf16 base) or 'nf4-unmerged' (on an NF4 base)."
    nf4 = variant == "nf4-unmerged"
    model = build_random_qwen2(arch, "nf4" if nf4 else "none", device)
    model.config.use_cache = True
    if device == "cpu" and not nf4: model = model.float()   # the CPU dry run: fp32, as the tests run
    model = add_lora(model, a.lora_r, merge=not nf4)
    model.emosum_load = dict(adapter="random", merged=not nf4, weights="nf4" if nf4 else str(model.dtype).replace("torch.", ""))
    label = f"Qwen2-7B shape, random weights, LoRA r={a.lora_r} " + ("unmerged on NF4" if nf4 else "merged into bf16") if not a.tiny else f"tiny, {variant}"
    cap = gpu_cap(device, a.nf4_gpu_gib if nf4 else None)   # the 4-bit path is the small card's: measured inside that card's memory
    if cap: label += f", GPU capped at {cap} GiB"
    try:
        rows = run_engines(model, tok, prompts, n_list, new, a.engines, label, device, a, deadline)
        if a.profile_n and time.time() < deadline:
            try: rows.append(dict(label=label, profile=profile_steps(model, tok, prompts, device, a))); log(rows[-1])
            except Exception as e: rows.append(dict(label=label, profile={"error": f"{type(e).__name__}: {str(e)[:300]}"})); traceback.print_exc()
        return rows
    finally:
        gpu_cap(device, None)
        del model; gc.collect()
        if device == "cuda": torch.cuda.empty_cache()


def run_real(name, data, n, device, a, deadline):
    "A real model end to end through emosum.inference.generate (stop tokens, parsing, appends), both engines on the same records."
    from emosum.data import load_records
    from emosum.inference import load_model_and_tokenizer, generate
    base, _, adapter = name.partition("@")                       # MODEL@ADAPTER: a fine-tuned model (adapter merged)
    model, tok = load_model_and_tokenizer(base, adapter or None,
                                          compute_dtype="bfloat16" if device == "cuda" else "float32",
                                          device_map={"": 0} if device == "cuda" else {"": "cpu"})
    recs = list(load_records(data))
    recs = [r for i in range(-(-n // len(recs))) for r in recs][:n]
    recs = [dataclasses.replace(r, id=f"{r.id}#{i}") for i, r in enumerate(recs)]         # unique ids: 150 repeats records
    rows, answers = [], {}
    with tempfile.TemporaryDirectory() as td:
        generate(model, tok, recs[:1], Path(td) / "warm.jsonl", max_length=a.max_length, max_new_tokens=8, progress=False, engine="padded")
        generate(model, tok, recs[:1], Path(td) / "warm2.jsonl", max_length=a.max_length, max_new_tokens=8, progress=False, engine="continuous")
        for eng in a.engines:
            row = dict(label=f"{name} (real weights, generate() end to end)", engine=eng, n=n, max_new_tokens=a.real_new)
            if time.time() > deadline:
                row["skipped"] = "past the --budget-s"; rows.append(row); log(row); continue
            try:
                out, secs, peak = timed(device, lambda: generate(model, tok, recs, Path(td) / f"{eng}.jsonl", max_length=a.max_length,
                                                              max_new_tokens=a.real_new, batch_size=a.padded_batch if eng == "padded" else a.concurrency,
                                                              progress=False, engine=eng, memory_fraction=a.memory_fraction))
                toks = sum(r["new_tokens"] for r in out)
                answers[eng] = [r["raw"] for r in out]
                row.update(seconds=round(secs, 2), tokens=toks, tokens_per_s=round(toks / secs, 1), s_per_report=round(secs / n, 3), peak_gib=peak,
                           prompt_tokens_mean=round(sum(r["prompt_tokens"] for r in out) / n), concurrency=out[0]["engine"].get("concurrency"),
                           parsed=sum(r["status"] in ("ok", "repaired") for r in out))
            except Exception as e:
                row["error"] = ("OOM: " if is_oom(e) else "") + f"{type(e).__name__}: {str(e)[:300]}"
                if not is_oom(e): traceback.print_exc()
            log(row); rows.append(row)
    if len(answers) == 2: rows[-1]["same_text_as_padded"] = sum(x == y for x, y in zip(answers["padded"], answers["continuous"]))
    del model; gc.collect()
    if device == "cuda": torch.cuda.empty_cache()
    return rows


def run_constrained(name, data, n, device, a, deadline):
    """The JSON constraint's cost (issue 13): a real model through emosum.inference.generate on the padded engine, the same records
    without and with constrained=True (answers kept to the ES JSON schema by llguidance): tokens/s, seconds per report, valid JSON,
    and the constraint's own time per decoding step (its logits processor, timed around each call)."""
    import emosum.inference as inf
    from emosum.data import load_records
    model, tok = inf.load_model_and_tokenizer(name, compute_dtype="bfloat16" if device == "cuda" else "float32",
                                              device_map={"": 0} if device == "cuda" else {"": "cpu"})
    recs = list(load_records(data))
    recs = [dataclasses.replace(r, id=f"{r.id}#{i}") for i, r in enumerate([r for _ in range(-(-n // len(recs))) for r in recs][:n])]
    new, spent, call = max(a.real_new, 64), [0.0, 0], inf.JsonLogitsProcessor.__call__   # 64: the tiny model's five fields fit
    def timed_call(self, ids, scores):
        sync(device); t = time.perf_counter(); out = call(self, ids, scores); sync(device)
        spent[0] += time.perf_counter() - t; spent[1] += 1
        return out
    rows = []
    with tempfile.TemporaryDirectory() as td:
        inf.generate(model, tok, recs[:1], Path(td) / "warm.jsonl", max_length=a.max_length, max_new_tokens=new, progress=False, engine="padded", constrained=True)
        inf.JsonLogitsProcessor.__call__ = timed_call
        try:
            for constrained in (False, True):
                row = dict(label=f"{name} (real weights, generate(), {'constrained' if constrained else 'unconstrained'} JSON)", engine="padded",
                           n=n, max_new_tokens=new, constrained=constrained)
                if time.time() > deadline: row["skipped"] = "past the --budget-s"; rows.append(row); log(row); continue
                spent[:] = [0.0, 0]
                out, secs, peak = timed(device, lambda: inf.generate(model, tok, recs, Path(td) / f"c{constrained:d}.jsonl", max_length=a.max_length,
                                                                     max_new_tokens=new, batch_size=a.padded_batch, progress=False, engine="padded",
                                                                     memory_fraction=a.memory_fraction, constrained=constrained))
                toks = sum(r["new_tokens"] for r in out)
                row.update(seconds=round(secs, 2), tokens=toks, tokens_per_s=round(toks / secs, 1), s_per_report=round(secs / n, 3), peak_gib=peak,
                           prompt_tokens_mean=round(sum(r["prompt_tokens"] for r in out) / n), concurrency=out[0]["engine"].get("concurrency"),
                           json_ok=sum(r["status"] == "ok" for r in out), json_repaired=sum(r["status"] == "repaired" for r in out),
                           json_failed=sum(r["status"] == "failed" for r in out), prompt_too_long=sum(r["status"] == "error" for r in out),
                           constraint_ms_per_step=round(1e3 * spent[0] / spent[1], 3) if spent[1] else None)
                log(row); rows.append(row)
        finally: inf.JsonLogitsProcessor.__call__ = call
    if len(rows) == 2 and "tokens_per_s" in rows[0] and "tokens_per_s" in rows[1]:
        rows[1]["tokens_per_s_vs_unconstrained"] = round(rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"], 3)
    del model; gc.collect()
    if device == "cuda": torch.cuda.empty_cache()
    return rows


def attention_check(device):
    """The varlen kernel (CUDA: FlashAttention-2 in torch) against the per-sequence fp32 reference, on random sequences with GQA,
    packed back to back (paged layout) and in place in a larger cache with seqused_k (contiguous layout): max abs differences."""
    from emosum.inference import varlen_attention
    g = torch.Generator().manual_seed(0)
    lq, lk = [3, 1, 200, 1], [700, 1500, 200, 33]
    cq = torch.tensor([0] + lq).cumsum(0); ck = torch.tensor([0] + lk).cumsum(0)
    q, k, v = (torch.randn(n, h, 128, generator=g) for n, h in ((sum(lq), 28), (sum(lk), 4), (sum(lk), 4)))
    ref = varlen_attention(q, k, v, cq, ck, max(lq), max(lk), 128 ** -0.5)
    dt = torch.bfloat16 if device == "cuda" else torch.float32
    dev = lambda *ts: [t.to(device, dt) if t.is_floating_point() else t.to(device) for t in ts]
    got = varlen_attention(*dev(q, k, v, cq, ck), max(lq), max(lk), 128 ** -0.5)
    starts = torch.tensor([2048, 0, 6144, 4096])                    # each sequence in its own 2048-token block, blocks in any order
    kc, vc = torch.zeros(8192, 4, 128), torch.zeros(8192, 4, 128)
    for i, s in enumerate(starts.tolist()): kc[s:s + lk[i]], vc[s:s + lk[i]] = k[ck[i]:ck[i + 1]], v[ck[i]:ck[i + 1]]
    q2, kc, vc, cq2, ck2, used = dev(q, kc, vc, cq, torch.cat([starts, starts[-1:] + lk[-1]]), torch.tensor(lk))
    got2 = varlen_attention(q2, kc, vc, cq2, ck2, max(lq), max(lk), 128 ** -0.5, seqused_k=used)
    return dict(kernel="aten._flash_attention_forward (varlen)" if device == "cuda" else "reference",
                max_abs_diff_packed=float((got.float().cpu() - ref).abs().max()), max_abs_diff_in_place=float((got2.float().cpu() - ref).abs().max()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "longemotion_es" / "es_dev.jsonl"),
                    help="records to summarise (default: ../shared/data/longemotion_es/es_dev.jsonl; --sample for the bundled records)")
    ap.add_argument("--sample", action="store_true", help="summarise the bundled data/sample_es.jsonl (10 short fictional records; "
                    "prompts about 40%% as long as the dev records') instead of --data")
    ap.add_argument("--n", default=None, help="reports per measurement on the 7B shape (default 10,50,150; NF4 10,50; --quick 10,50 and NF4 10; --tiny 2,4)")
    ap.add_argument("--padded-n", default=None, help="of those, where the padded path is measured too (default 10; --tiny 2,4): it takes 1-4 s a report")
    ap.add_argument("--new", type=int, default=None, help="new tokens per report on the 7B shape (default 256; --tiny 8)")
    ap.add_argument("--max-length", type=int, default=None, help="prompt + answer budget (default 8192; --tiny 1024)")
    ap.add_argument("--variants", default="bf16-merged,nf4-unmerged", help="7B-shape variants: bf16-merged, nf4-unmerged ('' to skip)")
    ap.add_argument("--engines", default="padded,continuous")
    ap.add_argument("--model", action="append", default=None, help="real-weights model(s) (default: embedded:smollm2-135m-instruct and "
                    "embedded:qwen2.5-coder-0.5b-instruct; --tiny: embedded:tiny-qwen2); MODEL@ADAPTER for a fine-tuned one, "
                    "e.g. embedded:smollm2-135m-instruct@embedded:smollm2-135m-es; 'none' to skip")
    ap.add_argument("--real-n", type=int, default=None, help="reports per real-weights measurement (default 50; --quick 20; --tiny 2)")
    ap.add_argument("--real-new", type=int, default=None, help="max new tokens for real weights (default 512; --tiny 8)")
    ap.add_argument("--padded-batch", type=int, default=16, help="prompts per padded call (the GPU profiles' gen_batch_size; fewer if memory is short)")
    ap.add_argument("--concurrency", type=int, default=256, help="upper bound on requests decoded together by continuous batching")
    ap.add_argument("--memory-fraction", type=float, default=0.9)
    ap.add_argument("--layout", default="auto", choices=("auto", "contiguous", "paged"), help="the continuous engine's KV cache layout (7B shape)")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--cb-options", type=json.loads, default=None, help='extra ContinuousBatchingConfig settings, JSON, e.g. \'{"use_async_batching": true}\'')
    ap.add_argument("--nf4-gpu-gib", type=float, default=12.0, help="the NF4 variant runs as on a card of this many GiB (0: the whole GPU)")
    ap.add_argument("--profile-n", type=int, default=8, help="after each 7B-shape variant, profile a short continuous run of this many prompts (0: off)")
    ap.add_argument("--profile-new", type=int, default=32, help="new tokens per prompt in that profile")
    ap.add_argument("--quick", action="store_true", help="fewer reports: 7B shape 10,50 (NF4: 10), real weights 20")
    ap.add_argument("--tiny", action="store_true", help="a tiny Qwen2 and short prompts (a dry run of every code path)")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny)")
    ap.add_argument("--budget-s", type=float, default=420, help="skip measurements that would end after this many seconds")
    ap.add_argument("--constrained", nargs="?", const="", default=None, metavar="MODELS",
                    help="also measure the JSON constraint's cost (constrained=True beside unconstrained, padded, the same records) on these real-weights models, comma-separated (default: the --model list)")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/generate_<date>.json)")
    a = ap.parse_args(argv)
    device = "cpu" if a.cpu or not torch.cuda.is_available() else "cuda"
    if device == "cpu": torch.set_num_threads(1)
    t0 = time.time(); deadline = t0 + a.budget_s
    a.engines = [e for e in a.engines.split(",") if e]
    n_list = [int(x) for x in (a.n or ("2,4" if a.tiny else "10,50" if a.quick else "10,50,150")).split(",")]
    a.padded_n = [int(x) for x in (a.padded_n or ("2,4" if a.tiny else "10")).split(",")]
    new = a.new or (8 if a.tiny else 256)
    a.max_length = a.max_length or (1024 if a.tiny else 8192)
    a.real_n = a.real_n or (2 if a.tiny else 20 if a.quick else 50)
    a.real_new = a.real_new or (8 if a.tiny else 512)
    models = [m for m in (a.model or (["embedded:tiny-qwen2"] if a.tiny else ["embedded:smollm2-135m-instruct", "embedded:qwen2.5-coder-0.5b-instruct"])) if m != "none"]
    data = ROOT / "data" / "sample_es.jsonl" if a.sample or a.tiny else Path(a.data)
    if not data.is_file():         # no silent switch to the short sample records: the timings would not be comparable
        raise SystemExit(f"{data} not found: pass --data <ES records> (the LongEmotion dev file), or --sample for the "
                         "bundled records")
    from emosum.config import load_tokenizer
    tok_name = "embedded:tiny-qwen2"
    if not a.tiny:
        try: tok = load_tokenizer("embedded:qwen2.5-coder-0.5b-instruct"); tok_name = "embedded:qwen2.5-coder-0.5b-instruct"
        except Exception as e: log(f"the Qwen2.5 tokenizer is not available ({type(e).__name__}: {str(e)[:120]}); using the tiny Qwen2 one")
    if tok_name == "embedded:tiny-qwen2": tok = load_tokenizer(tok_name)
    arch = dict(TINY, vocab_size=len(tok)) if a.tiny else QWEN2_7B
    recs, prompts = load_prompts(data, tok, max(n_list), a.max_length, new)
    day = datetime.date.today().isoformat()
    out = Path(a.out) if a.out else Path(tempfile.gettempdir()) / f"generate_{day}_tiny.json" if a.tiny else ROOT / "bench" / "results" / f"generate_{day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    lens = [len(p) for p in prompts]
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": device,
              "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "machine": machine_info(device),
              "arch": arch, "tokenizer": tok_name, "data": {"path": str(data), "records": len(recs), "prompt_tokens_mean": round(sum(lens) / len(lens)),
              "prompt_tokens_min": min(lens), "prompt_tokens_max": max(lens)},
              "settings": {k: v for k, v in vars(a).items() if k not in ("data", "out")}, "runs": [], "skipped": []}
    log(f"device {device}; {len(recs)} records of {data}; prompts {min(lens)}-{max(lens)} tokens (mean {sum(lens) / len(lens):.0f}) with {tok_name}")

    def save():
        result["seconds"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(result, indent=2))
        if os.environ.get("OUT"): (Path(os.environ["OUT"]) / out.name).write_text(json.dumps(result, indent=2))

    try:
        result["attention_check"] = attention_check(device); log(result["attention_check"])
    except Exception as e:
        result["attention_check"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}; traceback.print_exc()
    save()
    for m in models:           # first: real weights, where the two engines' greedy answers can be compared
        if time.time() > deadline: result["skipped"].append(m); continue
        log(f"== {m}")
        try: result["runs"] += run_real(m, data, a.real_n, device, a, deadline)
        except Exception as e:
            traceback.print_exc(); result["runs"].append({"label": m, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        save()
    for m in ([x for x in a.constrained.split(",") if x] or models) if a.constrained is not None else []:   # the JSON constraint's cost
        if time.time() > deadline: result["skipped"].append(f"{m} constrained"); continue
        log(f"== {m}, with and without the JSON constraint")
        try: result["runs"] += run_constrained(m, data, a.real_n, device, a, deadline)
        except Exception as e:
            traceback.print_exc(); result["runs"].append({"label": f"{m} constrained", "error": f"{type(e).__name__}: {str(e)[:300]}"})
        save()
    for v in [v for v in a.variants.split(",") if v]:
        if time.time() > deadline: result["skipped"].append(v); continue
        log(f"== {v}")
        ns = n_list if a.n or a.tiny or v != "nf4-unmerged" else n_list[:1] if a.quick else n_list[:2]   # NF4 unmerged is the slow path
        try: result["runs"] += run_random(arch, v, tok, prompts, ns, new, device, a, deadline)
        except Exception as e:
            traceback.print_exc(); result["runs"].append({"label": v, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        save()
    save()
    log(f"wrote {out} ({result['seconds']} s)")
    for r in result["runs"]:
        if "seconds" in r:
            print(f"  {r['label'][:60]:<60} {r['engine']:<10} n={r['n']:<4} {r['s_per_report']:>7.3f} s/report {r['tokens_per_s']:>9.1f} tok/s "
                  f"peak {r['peak_gib']} GiB" + (f"  same text {r['same_text_as_padded']}/{r['n']}" if "same_text_as_padded" in r else ""), flush=True)
    return result


if __name__ == "__main__":
    main()
