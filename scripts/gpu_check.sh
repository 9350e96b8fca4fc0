#!/usr/bin/env bash
# Prove the GPU path on one GPU in ~15 minutes: SmolLM2-135M trained in bf16 at ZeRO-2 (chunked and
# reference loss) and ZeRO-3 (gradient checkpointing; its export reloaded: same perplexity), fp16
# LoRA chunked vs reference (same gradient norm), every evaluation stage on cuda, ICL on the longest
# MMLU items with OPT-125M (2048 positions), tokens/s and peak memory printed.
#   scripts/gpu_check.sh              # on a machine with one CUDA GPU (exit 0: the path works)
#   scripts/gpu_check.sh --dry-run    # anywhere (CI): validate every config and print the plan
# Details: scripts/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
