#!/usr/bin/env bash
# One run on a lent GPU machine (no network, no Ray there; its own torch, transformers,
# sentence-transformers, tokenizers, pyarrow): GPU parity of the flat path, then the
# model-level table for MiniLM, BERT-base and BERT-large shapes in float16, then the causal-LM
# table (score, generate) for a GPT-2-medium shape.  Results land in
# $OUT (the device tool brings them back).  From the repository root:
#     bash bench/gpu_check.sh
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD" AUTOINFER_BENCH_CACHE="${TMPDIR:-/tmp}/autoinfer-bench"
OUT="${OUT:-/tmp/autoinfer-gpu}"
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/autoload/test_unpadded.py -k cuda 2>&1 | tee "$OUT/gpu_parity.log" | tail -15
python3 bench/model_bench.py --models minilm,bert-base,bert-large --device cuda --dtype float16 \
    --output "$OUT/model_cuda.json" 2>&1 | grep -v "Loading weights" | tee "$OUT/model_cuda.log" | tail -60
python3 bench/causal_bench.py --shape gpt2-medium --device cuda --dtype float16 --texts 2000 \
    --output "$OUT/causal_cuda.json" 2>&1 | grep -v "Loading weights" | tee "$OUT/causal_cuda.log" | tail -20
