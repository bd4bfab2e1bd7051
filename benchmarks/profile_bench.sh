#!/usr/bin/env bash
# The profiler's tables in BENCHMARKS.md (issue 5): every engine, backend and
# precision of the tiny and resnet18 exports, plus the runtime per stage on a replay.
# Usage: benchmarks/profile_bench.sh TINY_ENGINE_DIR RESNET18_ENGINE_DIR [OUT]
set -euo pipefail
tiny=${1:?tiny engine folder}
resnet=${2:?resnet18 engine folder}
out=${3:-bench-out/profile}
mkdir -p "$out"
edge=${EDGE:-.venv/bin/edge-mla}
$edge profile "$tiny" --batch 1 8 --threads 1 2 --repeats 300 --warmup 30 --runtime --duration 30 --out "$out/tiny" | tee "$out/tiny.txt"
$edge profile "$resnet" --batch 1 8 --threads 1 2 --repeats 100 --warmup 10 --backend onnxruntime torch --out "$out/resnet18" | tee "$out/resnet18.txt"
