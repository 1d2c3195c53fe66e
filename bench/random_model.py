"""Write a model folder with random weights in a given architecture, to run the user's path (`emosum run`, `emosum predict`)
on a machine that cannot reach the hub: `-p model=<folder>` then loads it as it would load `Qwen/Qwen2-7B-Instruct`.

Speed and memory do not depend on the weights' values, so a run on the folder measures what the real model would cost;
its summaries are noise (a random model rarely emits an end-of-turn token: every answer runs to max_new_tokens).

    python bench/random_model.py --out /tmp/qwen2-7b-random                       # the exact Qwen2-7B shape, on the GPU
    python bench/random_model.py --shape tiny --device cpu --out /tmp/tiny-random # a 2-layer one, for a dry run
    emosum run --profile qwen2-7b-12gb -p model=/tmp/qwen2-7b-random -p max_steps=4 ...
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
from train_throughput import QWEN2_7B, TINY  # noqa: E402

SHAPES = {"qwen2-7b": QWEN2_7B, "tiny": TINY}


def write_random_model(out: str | Path, shape: str = "qwen2-7b", tokenizer: str = "embedded:qwen2.5-coder-0.5b-instruct",
                       device: str = "cuda", dtype: str = "bfloat16", seed: int = 0) -> dict:
    "Save a random-weight Qwen2ForCausalLM of `shape` with `tokenizer` (and its chat template) to `out`; returns what was written."
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
    from emosum.config import load_tokenizer
    from emosum.prompts import end_of_turn_ids
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(tokenizer)
    arch = dict(SHAPES[shape])
    if len(tok) > arch["vocab_size"]: arch["vocab_size"] = len(tok)        # every token id must have a row
    cfg = Qwen2Config(**arch, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    t0 = time.time()
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=end_of_turn_ids(tok) or tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               do_sample=False)
    model.save_pretrained(out, max_shard_size="4GB")
    tok.save_pretrained(out)
    info = {"shape": shape, "arch": arch, "tokenizer": tokenizer, "dtype": dtype, "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(time.time() - t0, 1),
            "bytes": sum(f.stat().st_size for f in out.glob("*.safetensors")),
            "note": "random weights: for speed and memory only (bench/random_model.py)"}
    (out / "random_model.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="qwen2-7b", choices=sorted(SHAPES))
    ap.add_argument("--tokenizer", default="embedded:qwen2.5-coder-0.5b-instruct", help="a tokenizer emosum.config.load_tokenizer reads")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the weights are initialised")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    info = write_random_model(a.out, a.shape, a.tokenizer, a.device, a.dtype, a.seed)
    print(json.dumps({k: v for k, v in info.items() if k != "arch"}))


if __name__ == "__main__":
    main()
