"""QLoRA training throughput and peak memory on one GPU, Qwen2-7B architecture with random weights.

Measures, in one process:
  * the ORIGINAL recipe: NF4 + double quant, LoRA r=64 on all seven projections,
    `prepare_model_for_kbit_training` (fp32 upcast) with gradient checkpointing, SDPA, full-vocab
    logits and loss, AdamW; one sequence of L tokens per optimizer step;
  * the PROJECT'S path: `emosum.training.prepare_model` + `make_trainer` (transformers' Trainer with
    `EmosumTrainer.compute_loss`, the padding-free collator, bf16 mixed precision), from the
    `qwen2-7b-*` profiles with micro-batch 1 (one L-token sequence per step);
and writes bench/results/train_<date>.json (machine, versions, command, tokens/s, peak GiB, loss check).

Round 2 (issue 14, `--only round2`): the memory levers (profile keys embedding_on_cpu, loss_chunk, mlp_chunk,
expandable_segments) beside the old path (the same profile with every lever off) and the original recipe, each
with a per-component memory breakdown measured with torch.cuda memory statistics around the phases of a step
(forward, backward, optimizer step) of a plain loop with the Trainer's own optimizer; then the long-context
profile at 131,072 tokens and a probe for the longest context. Results are written after every measurement, to
bench/results/train_<date>_round2.json (or --out).

The random 4-bit model is built without any hub download: the bf16 model is created directly on the
GPU, then each decoder Linear is replaced by a bitsandbytes `Linear4bit` quantised from its weights
(what `from_pretrained(..., quantization_config=BitsAndBytesConfig(...))` produces; embeddings and
lm_head stay bf16 as there).

    python bench/train_throughput.py                    # the full benchmark (one H200: ~8 min)
    python bench/train_throughput.py --tiny --cpu --only all   # a dry run of every code path (minutes on 2 cores)
    python bench/train_throughput.py --only round2 --budget-s 450 --out $OUT/train_round2.json   # issue 14 (one H200: ~8 min)
"""
from __future__ import annotations
import argparse, datetime, gc, json, os, platform, subprocess, sys, tempfile, time, traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
                hidden_act="silu", sliding_window=None, use_sliding_window=False)
TINY = dict(QWEN2_7B, vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)
ANSWER_TOKENS = 512   # labelled tokens at the end of each sequence (a summary is a few hundred tokens)
GiB = 2**30
LEVERS_OFF = dict(embedding_on_cpu=False, loss_chunk=0, mlp_chunk=0, expandable_segments=False, checkpoint_every=1)   # the old path
ROUND2 = ("r2_8gb", "r2_12gb", "r2_original", "r2_long", "r2_speed", "r2_probe", "r2_long_gpu")


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def build_random_qwen2(arch: dict, quant: str, device: str, seed: int = 0):
    "A random Qwen2 in bf16 on `device`; with quant='nf4', decoder Linears become bnb Linear4bit (NF4 + double quant)."
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(**arch)
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.config.use_cache = False
    if quant == "nf4":
        import bitsandbytes as bnb
        from transformers import BitsAndBytesConfig
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, child in list(parent.named_children()):
                    if not isinstance(child, torch.nn.Linear): continue
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None, compute_dtype=torch.bfloat16,
                                          compress_statistics=True, quant_type="nf4", device="meta")
                    q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4").to(device)
                    if child.bias is not None: q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                    setattr(parent, name, q)
                    del child
        model.is_loaded_in_4bit = True
        model.config.quantization_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    if device == "cuda": torch.cuda.empty_cache()
    return model


def random_batch(L: int, vocab: int, device: str, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, L), generator=g)
    labels = ids.clone(); labels[:, : L - ANSWER_TOKENS] = -100
    return ids.to(device), labels.to(device)


def sync(device):
    if device == "cuda": torch.cuda.synchronize()


def reset_peak(device):
    if device == "cuda":
        gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def peak_gib(device):
    return round(torch.cuda.max_memory_allocated() / GiB, 2) if device == "cuda" else None


def free(device, *objs):
    for o in objs: del o
    gc.collect()
    if device == "cuda": torch.cuda.empty_cache()


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def set_expandable(on: bool, device: str):
    "Switch the CUDA allocator's expandable segments on/off for the segments allocated from now on (cached ones freed)."
    if device != "cuda": return
    gc.collect(); torch.cuda.empty_cache()
    try: torch.cuda.memory._set_allocator_settings(f"expandable_segments:{'True' if on else 'False'}")
    except Exception as e: log(f"could not set expandable_segments={on}: {type(e).__name__}: {e}")


def nbytes(tensors) -> int:
    seen, n = set(), 0
    for t in tensors:
        if t is None or not torch.is_tensor(t) or t.data_ptr() in seen: continue
        seen.add(t.data_ptr()); n += t.numel() * t.element_size()
    return n


def weight_components(model, device: str) -> dict:
    "Bytes of the model's tensors on `device`, by kind: 4-bit weights (+ their quantisation state), embedding, lm_head, LoRA, other."
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    on = lambda ts: [t for t in ts if torch.is_tensor(t) and t.device.type == device]
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    emb_t, head_t = on([emb.weight]), on([head.weight])
    q4, qstate = [], []
    for m in base.modules():
        qs = getattr(getattr(m, "weight", None), "quant_state", None)
        if qs is None or not hasattr(qs, "absmax"): continue
        q4.append(m.weight)
        qstate += [qs.absmax, qs.code] + ([qs.state2.absmax, qs.state2.code] if getattr(qs, "nested", False) else [])
    lora = [p for p in model.parameters() if p.requires_grad]
    known = {t.data_ptr() for t in on(q4 + emb_t + head_t + lora)}
    other = [p for p in on(list(model.parameters()) + list(model.buffers())) if p.data_ptr() not in known]
    return {"weights_4bit": nbytes(on(q4 + qstate)), "embedding": nbytes(emb_t), "lm_head": nbytes(head_t),
            "lora_weights": nbytes(on(lora)), "other_frozen": nbytes(other)}


def memory_breakdown(model, cfg, ids, labels, device, steps=2):
    """A plain loop of `steps` optimizer steps (the Trainer's optimizer and autocast, emosum's loss), with the
    allocator's statistics read around each phase; the breakdown is of the last step (GiB)."""
    from transformers import Trainer
    from emosum.training import causal_lm_loss, training_arguments
    with tempfile.TemporaryDirectory() as td:
        cls, kw = Trainer.get_optimizer_cls_and_kwargs(training_arguments(cfg, Path(td), has_eval=False), model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = cls(params, **kw)
    cuda = device == "cuda"
    alloc = (lambda: torch.cuda.memory_allocated()) if cuda else (lambda: 0)
    amp = dict(device_type=device, dtype=torch.bfloat16, enabled=cuda and cfg.compute_dtype == "bfloat16")
    model.train()
    for i in range(steps):
        reset_peak(device); sync(device); t = time.perf_counter()
        m0 = alloc()
        with torch.autocast(**amp):
            loss = causal_lm_loss(model, {"input_ids": ids, "labels": labels}, fast_path=cfg.fast_path, loss_chunk=cfg.loss_chunk)
        m1, pk_fwd = alloc(), (torch.cuda.max_memory_allocated() if cuda else 0)
        loss.backward()
        m2, pk_bwd = alloc(), (torch.cuda.max_memory_allocated() if cuda else 0)
        grads = nbytes(p.grad for p in params)
        opt.step()
        sync(device); dt = time.perf_counter() - t
        m3 = alloc()
        opt.zero_grad(set_to_none=True)
        stats = torch.cuda.memory_stats() if cuda else {}
    opt_t = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    paged = [v for v in opt_t if getattr(v, "is_paged", False)]
    comp = weight_components(model, device)
    comp.update(optimizer_state=nbytes(v for v in opt_t if not getattr(v, "is_paged", False) and v.device.type == device),
                gradients=grads, activations_after_forward=m1 - m0)
    peak = max(pk_fwd, pk_bwd, torch.cuda.max_memory_allocated() if cuda else 0)
    g = lambda b: round(b / GiB, 4)
    out = {k: g(v) for k, v in comp.items()}
    out.update(temporaries_peak_minus_rest=g(peak - sum(comp.values())) if cuda else None,
               peak_allocated=g(peak) if cuda else None, peak_in_forward=g(pk_fwd) if cuda else None,
               peak_in_backward=g(pk_bwd) if cuda else None, allocated_at_step_start=g(m0) if cuda else None,
               peak_reserved=g(stats.get("reserved_bytes.all.peak", 0)) if cuda else None,
               reserved_minus_allocated_at_peak=g(stats.get("reserved_bytes.all.peak", 0) - peak) if cuda else None,
               inactive_split_peak=g(stats.get("inactive_split_bytes.all.peak", 0)) if cuda else None,
               alloc_retries=stats.get("num_alloc_retries") if cuda else None,
               optimizer_state_paged_outside_allocator=g(nbytes(paged)), loss=round(loss.item(), 4), step_s=round(dt, 3))
    if cuda:
        free_b, total_b = torch.cuda.mem_get_info()
        out["device_used_outside_torch_allocator"] = g(total_b - free_b - torch.cuda.memory_reserved())
    del opt, loss
    model.zero_grad(set_to_none=True)
    return out


# --------------------------------------------------------------------------- the original recipe
def run_original(arch, L_list, steps, warmup, device, r=64):
    "The original project's recipe, as a plain loop (what the issue's 1,451 tok/s / 41.3 GiB baseline measured)."
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    quant = "nf4" if device == "cuda" else "none"
    model = build_random_qwen2(arch, quant, device)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    out = []
    for L in L_list:
        ids, labels = random_batch(L, arch["vocab_size"], device)
        row = {"path": "original", "seq_len": L, "lora_r": r}
        try:
            reset_peak(device)
            times, losses = [], []
            for i in range(warmup + steps):
                sync(device); t = time.perf_counter()
                loss = model(input_ids=ids, labels=labels).loss
                loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
                sync(device); dt = time.perf_counter() - t
                losses.append(loss.item())
                if i >= warmup: times.append(dt)
            row.update(tokens_per_s=round(L * len(times) / sum(times), 1), step_s=round(sum(times) / len(times), 3),
                       peak_gib=peak_gib(device), first_loss=round(losses[0], 4), losses=[round(x, 4) for x in losses])
        except Exception as e:
            row.update(error=("OOM: " if is_oom(e) else "") + f"{type(e).__name__}: {str(e)[:300]}", peak_gib=peak_gib(device))
            opt.zero_grad(set_to_none=True)
        log(row); out.append(row)
        free(device)
    free(device, model, opt)
    return out


# --------------------------------------------------------------------------- the project's path
class StepTimer:
    "A TrainerCallback timing optimizer steps (synchronised), skipping `warmup` steps."
    def __init__(self, warmup, device): self.warmup, self.device, self.times, self.t = warmup, device, [], None
    def __getattr__(self, name):              # every other TrainerCallback event is a no-op
        if name.startswith("on_"): return lambda *a, **k: None
        raise AttributeError(name)
    def on_step_begin(self, args, state, control, **kw):
        sync(self.device); self.t = time.perf_counter()
    def on_step_end(self, args, state, control, **kw):
        sync(self.device)
        if state.global_step > self.warmup: self.times.append(time.perf_counter() - self.t)


def run_project(arch, profile, L_list, steps, warmup, device, tok, label=None, liger=None, loss_check=False, offload=None,
                breakdown=False, trainer=True, **overrides):
    "emosum.training's path: prepare_model + make_trainer (Trainer, EmosumTrainer.compute_loss, flattening collator)."
    from transformers import TrainerCallback
    from emosum.config import load_profile
    from emosum.training import prepare_model, make_trainer, SFTDataset, causal_lm_loss, trainable_parameters
    quant_over = {} if device == "cuda" else {"quantization": "none", "compute_dtype": "float32"}
    overrides.setdefault("batch_size", 1)
    base_cfg = load_profile(profile, grad_accum=1, num_epochs=1, warmup_ratio=0.0, logging_steps=1, save_steps=10**6,
                            max_steps=warmup + steps, max_length=max(L_list), max_new_tokens=64,
                            **{**quant_over, **overrides})
    if offload is None: offload = base_cfg.offload_checkpoints
    set_expandable(base_cfg.expandable_segments, device)   # before the model allocates (prepare_model only switches it on)
    model = build_random_qwen2({**arch, "max_position_embeddings": max(arch["max_position_embeddings"], max(L_list))},
                               base_cfg.quantization, device)
    model, tok = prepare_model(base_cfg, model=model, tokenizer=tok, liger=liger, offload_checkpoints=offload)
    tr, tot = trainable_parameters(model)
    out = []
    for L in L_list:
        cfg = base_cfg.replace(max_length=L)
        ids, labels = random_batch(L, arch["vocab_size"], device)
        row = {"path": "project", "label": label or profile, "profile": profile, "seq_len": L, "lora_r": cfg.lora_r,
               "optim": cfg.optim, "fast_path": cfg.fast_path, "liger": getattr(model.get_base_model(), "_emosum_liger", False),
               "gradient_checkpointing": cfg.gradient_checkpointing, "offload_checkpoints": offload, "trainable_params": tr,
               "levers": {k: getattr(cfg, k) for k in LEVERS_OFF}, **{k: v for k, v in overrides.items()}}
        try:
            if loss_check:   # same weights, same batch: the fast path's loss vs the model's own full-logits loss
                with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                    b = {"input_ids": ids, "labels": labels}
                    row["loss_fast"] = round(causal_lm_loss(model, dict(b), fast_path=True).item(), 5)
                    row["loss_plain"] = round(causal_lm_loss(model, dict(b), fast_path=False).item(), 5)
                    if cfg.loss_chunk: row["loss_levers"] = round(causal_lm_loss(model, dict(b), loss_chunk=cfg.loss_chunk).item(), 5)
            if breakdown:
                row["memory"] = memory_breakdown(model, cfg, ids, labels, device, steps=2 if trainer else 1)
                log("memory", row["memory"])
                if not trainer:    # the one-step loop is the measurement (long contexts: a step takes a minute)
                    row.update(tokens_per_s=round(L / row["memory"]["step_s"], 1), step_s=row["memory"]["step_s"],
                               peak_gib=row["memory"]["peak_allocated"], first_loss=row["memory"]["loss"], timed_by="plain loop, 1 step")
                    raise StopIteration
            reset_peak(device)
            n = (warmup + steps) * cfg.batch_size      # a micro-batch of batch_size sequences, packed padding-free
            ds = SFTDataset([{"input_ids": ids[0].tolist(), "labels": labels[0].tolist()}] * n, list(range(n)), [])
            timer = StepTimer(warmup, device)
            cb = type("Timer", (TrainerCallback,), {"on_step_begin": timer.on_step_begin, "on_step_end": timer.on_step_end})()
            with tempfile.TemporaryDirectory() as td:
                trainer = make_trainer(cfg, model, tok, ds, None, Path(td), callbacks=[cb], disable_tqdm=True, save_strategy="no",
                                       data_seed=0, train_sampling_strategy="sequential")
                res = trainer.train()
                losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            row.update(tokens_per_s=round(L * cfg.batch_size * len(timer.times) / sum(timer.times), 1), step_s=round(sum(timer.times) / len(timer.times), 3),
                       peak_gib=peak_gib(device), first_loss=round(losses[0], 4), losses=[round(x, 4) for x in losses])
            if device == "cuda": row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GiB, 2)
            del trainer
        except StopIteration: pass
        except Exception as e:
            row.update(error=("OOM: " if is_oom(e) else "") + f"{type(e).__name__}: {str(e)[:300]}", peak_gib=peak_gib(device))
            if not is_oom(e): traceback.print_exc()
        log(row); out.append(row)
        model.zero_grad(set_to_none=True); free(device)
    free(device, model)
    set_expandable(False, device)
    return out


def machine_info(device):
    import importlib.metadata as md
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for p in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "liger-kernel", "triton"):
        try: info[p] = md.version(p)
        except md.PackageNotFoundError: info[p] = None
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(0), gpu_mem_gib=round(torch.cuda.get_device_properties(0).total_memory / GiB, 1),
                    cuda=torch.version.cuda)
        try: info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
        except Exception: pass
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a tiny Qwen2 (a dry run of every code path)")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny; no 4-bit)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--seqs", default="8192,16384,32768", help="sequence lengths for the project's path")
    ap.add_argument("--original-seqs", default="8192,16384", help="sequence lengths for the original recipe ('' to skip)")
    ap.add_argument("--probe", default="65536,98304,131072", help="longer contexts to try, 1 step each, until one fails ('' to skip)")
    ap.add_argument("--only", default="", help="comma-separated subset of: noliger,original,main,optim8bit,offload,recommended,profiles,probe, "
                    "and round 2's r2_8gb,r2_12gb,r2_original,r2_long,r2_speed,r2_probe,r2_long_gpu ('round2' = all seven; 'all' = every section)")
    ap.add_argument("--r2-probe", default="196608,262144", help="round 2: longer contexts to try with the long profile's levers, 1 step each")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (speeds up the original recipe's fp32 path)")
    ap.add_argument("--probe-offload", action="store_true", help="offload the checkpoints in the probe")
    ap.add_argument("--budget-s", type=float, default=540, help="skip remaining sections after this many seconds")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/train_<date>.json)")
    a = ap.parse_args(argv)
    device = "cpu" if a.cpu or not torch.cuda.is_available() else "cuda"
    arch = TINY if a.tiny else QWEN2_7B
    seqs = [int(s) for s in a.seqs.split(",") if s]
    oseqs = [int(s) for s in a.original_seqs.split(",") if s]
    probe = [int(s) for s in a.probe.split(",") if s]
    only = set(a.only.split(",")) if a.only else {"noliger", "original", "main", "optim8bit", "offload", "recommended", "profiles", "probe"}
    if "all" in only: only = (only - {"all"}) | {"noliger", "original", "main", "optim8bit", "offload", "recommended", "profiles", "probe", "round2"}
    if "round2" in only: only = (only - {"round2"}) | set(ROUND2)
    r2_only = only <= set(ROUND2)
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"train_{datetime.date.today().isoformat()}{'_round2' if r2_only else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if device == "cuda": torch.backends.cuda.matmul.allow_tf32 = a.tf32
    from emosum.config import load_tokenizer
    tok = load_tokenizer("embedded:tiny-qwen2")    # only its pad id / saving matter here; the ids are random
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": device, "arch": arch,
              "answer_tokens": ANSWER_TOKENS, "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
              "machine": machine_info(device), "tf32": a.tf32, "steps": a.steps, "warmup": a.warmup, "only": sorted(only),
              "budget_s": a.budget_s, "runs": []}
    t0 = time.time()

    def save():
        result["seconds"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(result, indent=2))
        if os.environ.get("OUT"): (Path(os.environ["OUT"]) / out.name).write_text(json.dumps(result, indent=2))

    def section(name, fn):
        if name not in only: return
        if time.time() - t0 > a.budget_s:
            log(f"skipping {name}: over the {a.budget_s}s budget"); result.setdefault("skipped", []).append(name); return
        log(f"== {name}")
        try: result["runs"] += fn()
        except Exception as e:
            traceback.print_exc(); result["runs"].append({"section": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        save()

    P = "qwen2-7b-12gb"
    S, W = a.steps, a.warmup
    # Liger patches RoPE process-wide, so the runs without it come first
    section("noliger", lambda: run_project(arch, P, [seqs[0]], S, W, device, tok, label="project without Liger kernels", liger=False))
    section("original", lambda: run_original(arch, oseqs, max(2, S - 1), W, device))
    section("main", lambda: run_project(arch, P, seqs, S, W, device, tok, label="project (profile qwen2-7b-12gb, micro-batch 1)", loss_check=True))
    section("optim8bit", lambda: run_project(arch, P, [seqs[0], seqs[-1]], S, W, device, tok, label="project + paged 8-bit AdamW",
                                             optim="paged_adamw_8bit" if device == "cuda" else "adamw_torch"))
    opt8 = "paged_adamw_8bit" if device == "cuda" else "adamw_torch"
    def offload_fn():
        return (run_project(arch, P, [seqs[0], seqs[-1]], S, W, device, tok, label="project + offloaded checkpoints", offload=True)
                + run_project(arch, P, [seqs[-1]], S, W, device, tok, label="project + offloaded checkpoints + paged 8-bit AdamW", offload=True, optim=opt8)
                + run_project(arch, P, [seqs[-1]], S, W, device, tok, label="project + paged 8-bit AdamW + lora_dropout=0", optim=opt8, lora_dropout=0.0))
    section("offload", offload_fn)
    def recommended():
        big = not a.tiny
        return (run_project(arch, "qwen2-7b-8gb", [4096 if big else 1024], S, W, device, tok, label="qwen2-7b-8gb + paged 8-bit AdamW", optim=opt8)
                + run_project(arch, "qwen2-7b-8gb", [4096 if big else 1024], S, W, device, tok, label="qwen2-7b-8gb + paged 8-bit AdamW + offload", optim=opt8, offload=True)
                + run_project(arch, "qwen2-7b-12gb", [8192 if big else 1024], S, W, device, tok, label="qwen2-7b-12gb, batch 2 packed + paged 8-bit AdamW", optim=opt8, batch_size=2)
                + run_project(arch, "qwen2-7b-24gb", [16384 if big else 1024], S, W, device, tok, label="qwen2-7b-24gb + paged 8-bit AdamW", optim=opt8)
                + run_project(arch, "qwen2-7b-24gb", [32768 if big else 2048], S, W, device, tok, label="qwen2-7b-24gb at 32k + paged 8-bit AdamW + offload", optim=opt8, offload=True))
    section("recommended", recommended)
    section("profiles", lambda: run_project(arch, "qwen2-7b-8gb", [4096 if not a.tiny else 1024], S, W, device, tok, label="profile qwen2-7b-8gb (micro-batch 1)")
                                + run_project(arch, "qwen2-7b-24gb", [16384 if not a.tiny else 1536], S, W, device, tok, label="profile qwen2-7b-24gb (micro-batch 1)"))

    def probe_fn():
        rows = []
        for L in probe:
            if time.time() - t0 > a.budget_s: break
            r = run_project(arch, P, [L], 1, 0, device, tok, label="longest-context probe (1 step)" + (", offloaded checkpoints" if a.probe_offload else ""),
                            optim=opt8, offload=a.probe_offload)
            rows += r
            if "error" in r[0]: break
        return rows
    section("probe", probe_fn)

    # ---- round 2 (issue 14): the memory levers, old path vs levers vs original recipe, with memory breakdowns
    big = not a.tiny
    tiny_mlp = {} if big else {"mlp_chunk": 256}      # the tiny run's sequences are short: chunk them anyway
    L8, L12, LL = (4096, 8192, 131072) if big else (1024, 1024, 2048)
    section("r2_8gb", lambda: run_project(arch, "qwen2-7b-8gb", [L8], S, W, device, tok, label="qwen2-7b-8gb, old path (levers off)",
                                          breakdown=True, **LEVERS_OFF)
                              + run_project(arch, "qwen2-7b-8gb", [L8], S, W, device, tok, label="qwen2-7b-8gb (its levers)",
                                            breakdown=True, loss_check=True))
    section("r2_12gb", lambda: run_project(arch, "qwen2-7b-12gb", [L12], S, W, device, tok, label="qwen2-7b-12gb, old path (levers off)",
                                           breakdown=True, **LEVERS_OFF)
                               + run_project(arch, "qwen2-7b-12gb", [L12], S, W, device, tok, label="qwen2-7b-12gb (its levers)",
                                             breakdown=True, loss_check=True))
    section("r2_original", lambda: run_original(arch, [L12], max(2, S - 1), W, device))
    long_rows = []
    def r2_long():
        long_rows[:] = run_project(arch, "qwen2-7b-128k", [LL], 1, 0, device, tok, label="qwen2-7b-128k (its levers, offloaded checkpoints)",
                                   breakdown=True, trainer=False, **tiny_mlp)
        return list(long_rows)
    section("r2_long", r2_long)
    # what bounds the 12gb profile's speed: the recompute (half of it, then all of it, kept instead) and LoRA dropout
    section("r2_speed", lambda: run_project(arch, "qwen2-7b-12gb", [L12], S, W, device, tok, label="qwen2-7b-12gb levers + checkpoint_every=2",
                                            checkpoint_every=2)
                                + run_project(arch, "qwen2-7b-12gb", [L12], S, W, device, tok, label="qwen2-7b-12gb levers, no checkpointing",
                                              gradient_checkpointing=False)
                                + run_project(arch, "qwen2-7b-12gb", [L12], S, W, device, tok, label="qwen2-7b-12gb levers + lora_dropout=0",
                                              lora_dropout=0.0))
    def r2_probe():
        rows, t_ref = [], next((r["step_s"] for r in long_rows if r.get("step_s")), None)
        for L in ([int(x) for x in a.r2_probe.split(",") if x] if big else [3072, 4096]):
            est = 30 + (t_ref or 60) * (L / LL) ** 2     # attention grows with L^2: a pessimistic estimate
            if time.time() - t0 + est > a.budget_s:
                log(f"r2_probe: skipping {L} tokens (~{est:.0f}s would pass the {a.budget_s}s budget)")
                result.setdefault("skipped", []).append(f"r2_probe {L}"); break
            r = run_project(arch, "qwen2-7b-128k", [L], 1, 0, device, tok, label="longest-context probe, qwen2-7b-128k levers (1 step)",
                            breakdown=True, trainer=False, **tiny_mlp)
            rows += r
            if "error" in r[0]: break
        return rows
    section("r2_probe", r2_probe)
    # last, if there is time: the long profile without offloading its checkpoints (does 131k fit 48 GiB without it?)
    section("r2_long_gpu", lambda: run_project(arch, "qwen2-7b-128k", [LL], 1, 0, device, tok, label="qwen2-7b-128k levers, checkpoints on the GPU",
                                               breakdown=True, trainer=False, offload=False, **tiny_mlp))
    save()
    log(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
