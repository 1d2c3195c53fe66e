"""The JSON constraint's cost a decoding step at minimum Bayes risk's batch sizes: row by row or on llguidance's threads.

`emosum.inference.JsonLogitsProcessor` keeps every row of a `model.generate` batch to the ES schema. Each step it feeds
each row's newest token to the row's llguidance matcher (and appends its text, to know which fields are written), then
asks each matcher for its mask of allowed next tokens. Two paths for the masks, chosen by the processor's `threads`:
  * serial    (threads=1, the processor's default): `fill_next_token_bitmask`, row by row in Python;
  * parallel  (threads > 1; here by default llguidance's own share of the CPUs, 80%, at most 32: 12 threads on 16
              cores, at least 2): `fill_next_token_bitmask_par` on llguidance's thread pool (`LLExecutor`, one per
              process), for the rows not stopped.
Both feed the tokens row by row (`consume_token`: about half a microsecond a row in llguidance, so
`consume_token_par` has nothing to save; most of that step is Python's, the per-row text decode the largest part).
This times the processor alone, no model, on the real tokenizer and vocabulary width. Each step: random logits
(standard normal, seeded; a bias on the tokens that close a string, so a field ends after some 50 tokens as a model's
do), the processor, then the allowed token of the highest logit (a random draw among the allowed ones): the matchers
walk through whole answers (keys, values, closing, the stop token) until every row has stopped or the budget is spent.
Both paths walk from the same seed one after the other and must choose the same token in every row at every step,
else the script stops (their masks would differ).

Per batch size and path: milliseconds per step of the whole processor call, and of its grammar work, the CPU work that
stays on the CPU on a GPU machine: consuming the newest tokens (`_consume_last`, with the per-row text decode, also
given alone) and computing the masks (`_next_token_bitmask`). The rest (unpacking the bitmask, masking the logits)
runs where the logits are: on the GPU in a real run, on the CPU here. torch runs on one thread (--torch-threads): on a
GPU machine its CPU threads are idle while the grammar runs, here its spinning OpenMP threads would take the cores.

    python bench/constraint_batch.py                          # Qwen2.5's tokenizer, batches 16, 64, 256 (2 CPU cores: ~9 min)
    python bench/constraint_batch.py --threads 2              # the pool's size (default: the processor's, at least 2)
    python bench/constraint_batch.py --batch 256 --new 512
    python bench/constraint_batch.py --tiny                   # seconds: the code path, on the tiny model's tokenizer
    python bench/constraint_batch.py --device cuda --batch 64,256   # a GPU machine: the logits' part where a run has it

Writes bench/results/constraint_batch_<date>.json (machine, versions, command, numbers).
"""
from __future__ import annotations
import argparse, contextlib, datetime, importlib.metadata as md, json, os, platform, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import emosum.inference as inf  # noqa: E402


def llguidance_default_threads() -> int:
    "llguidance's own default size for its pool: 80% of the CPUs this process may use, at most 32 (1 on 2 cores)."
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(32, max(1, cpus * 4 // 5))


@contextlib.contextmanager
def timers(c: dict):
    "Seconds spent in `_consume_last`, `_next_token_bitmask` and the constraint's decode, summed while the block is open."
    spent = dict(consume=0.0, mask=0.0, decode=0.0)
    def timed(key, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try: return fn(*a, **k)
            finally: spent[key] += time.perf_counter() - t
        return run
    real = inf._consume_last, inf._next_token_bitmask, c["decode"]
    inf._consume_last, inf._next_token_bitmask = timed("consume", real[0]), timed("mask", real[1])
    c["decode"] = timed("decode", real[2])
    try: yield spent
    finally: inf._consume_last, inf._next_token_bitmask, c["decode"] = real


def walk(c: dict, batch: int, new: int, threads: int, seed: int, bias: float, device: str = "cpu"):
    "One seeded walk of `batch` rows through `new` steps at most: the tokens chosen, seconds per step and per part."
    g, dev = torch.Generator().manual_seed(seed), torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    proc, ids, steps = inf.JsonLogitsProcessor(c, new, threads=threads), torch.zeros(batch, 1, dtype=torch.long, device=dev), []
    with timers(c) as spent:
        for _ in range(new):
            scores = torch.randn(batch, c["vocab"], generator=g).to(dev)
            scores[:, c["closers"]] += bias
            sync(); t = time.perf_counter()
            out = proc(ids, scores); sync()
            steps.append(time.perf_counter() - t)
            ids = torch.cat([ids, out.argmax(1, keepdim=True)], 1)
            if all(m.is_stopped() for m in proc.m): break
    stop = torch.tensor(c["stop"], device=dev)
    answer = (~torch.isin(ids[:, 1:], stop)).sum(1).float()           # tokens before the stop token
    return ids, dict(steps=len(steps), answer_tokens_mean=round(answer.mean().item(), 1),
                     answer_tokens_max=int(answer.max()), parsed=sum(_parses(t) for t in proc.text),
                     ms_per_step=round(sum(steps) / len(steps) * 1e3, 3),
                     **{f"{k}_ms_per_step": round(v / len(steps) * 1e3, 3) for k, v in spent.items()},
                     grammar_ms_per_step=round((spent["consume"] + spent["mask"]) / len(steps) * 1e3, 3))


def _parses(text: str) -> bool:
    try: return isinstance(json.loads(text), dict)
    except ValueError: return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct", help="whose tokenizer and vocabulary width")
    ap.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64, 256],
                    help="rows per model.generate call (a comma list measures each)")
    ap.add_argument("--new", type=int, default=512, help="max new tokens (the profile's): the walk's longest")
    ap.add_argument("--bias", type=float, default=2.0, help="added to the logits of the tokens that close a string")
    ap.add_argument("--threads", type=int, default=None,
                    help="the parallel path's pool (default: llguidance's own size, 80%% of the CPUs, at least 2)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch's CPU threads (the random logits, the masking)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where the logits are (cuda: the unpacking and masking on the GPU, as in a run)")
    ap.add_argument("--tiny", action="store_true", help="the tiny Qwen2's tokenizer, batches 4 and 8, 60 steps (a dry run)")
    ap.add_argument("--out", default=None, help="results file (default bench/results/constraint_batch_<date>.json)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.torch_threads)
    threads = a.threads or max(2, llguidance_default_threads())
    from transformers import AutoConfig
    from emosum.config import load_tokenizer, resolve_model
    name = "embedded:tiny-qwen2" if a.tiny else a.model
    batches, new = ([4, 8], 60) if a.tiny else (a.batch, a.new)
    t0 = time.time()
    tok = load_tokenizer(name)
    vocab = AutoConfig.from_pretrained(resolve_model(name)[0]).vocab_size
    c = inf.json_constraint(tok, vocab, max_new_tokens=new)
    versions = {p: md.version(p) for p in ("torch", "transformers", "tokenizers", "llguidance")}
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
               machine=dict(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count(),
                            llguidance_default_threads=llguidance_default_threads(),
                            gpu=torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None),
               versions=versions, settings=dict(vars(a), model=name, vocab=vocab, batches=batches, new=new, threads=threads),
               setup_s=round(time.time() - t0, 1), runs=[])
    path = Path(a.out or ROOT / "bench" / "results" / f"constraint_batch_{datetime.date.today()}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in (1, threads):   # untimed: llguidance's first masks, the thread pool, torch's kernels
        walk(c, 2, 16, n, a.seed, a.bias, a.device)
    for b in batches:
        (ids, serial), (ids_par, par) = (walk(c, b, new, n, a.seed, a.bias, a.device) for n in (1, threads))
        if not torch.equal(ids, ids_par): raise SystemExit(f"batch {b}: the paths chose different tokens (masks differ)")
        row = dict(batch=b, threads=threads, serial=serial, parallel=par, same_tokens=True,
                   speedup=dict(processor=round(serial["ms_per_step"] / par["ms_per_step"], 2),
                                grammar=round(serial["grammar_ms_per_step"] / par["grammar_ms_per_step"], 2),
                                mask=round(serial["mask_ms_per_step"] / par["mask_ms_per_step"], 2)))
        print(json.dumps(row), flush=True)
        out["runs"].append(row); out["seconds"] = round(time.time() - t0, 1)
        path.write_text(json.dumps(out, indent=1) + "\n")   # after every batch size: a run cut short keeps its numbers
    print(f"wrote {path} ({out['seconds']} s)")
    return out


if __name__ == "__main__":
    main()
