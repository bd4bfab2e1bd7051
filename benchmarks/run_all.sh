#!/usr/bin/env bash
# Every command behind BENCHMARKS.md, in order (long: hours on 2 cores).
# Needs the real data in $EDGE_MLA_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EDGE=${EDGE:-.venv/bin/edge-mla}
DATA=${EDGE_MLA_DATA:-../shared/data}

# Issue 2: methods x splits x seeds, and training speed.
$PY benchmarks/train_bench.py --data-dir "$DATA" --out bench-out/train --splits official speaker --seeds 0 1 2 --limit 6000 --epochs 4 --jobs 2 --no-corrupt
for s in joint mla; do $EDGE eval bench-out/train/official/$s-s0 --data-dir "$DATA" > bench-out/train/corrupt-$s-s0.txt; done
$PY -m benchmarks.speed_bench --data-dir "$DATA" --preset tiny --batches 30 --rounds 3

# Issue 3: export runs and FP32 vs INT8 per calibration method.
$EDGE train --method mla --preset tiny --dataset avmnist --data-dir "$DATA" --limit 20000 --epochs 3 --threads 1 --val-limit 1000 --no-test --out bench-out/export-runs/avmnist-tiny --force
$EDGE train --method mla --preset resnet18 --dataset avmnist --data-dir "$DATA" --limit 2000 --epochs 1 --threads 1 --val-limit 500 --no-test --out bench-out/export-runs/avmnist-resnet18 --force
$PY benchmarks/export_bench.py --run tiny=bench-out/export-runs/avmnist-tiny --run resnet18=bench-out/export-runs/avmnist-resnet18 --activations symmetric --eval-limit 2000 --latency-repeats 300 --out bench-out/export-bench
$PY benchmarks/export_bench.py --run tiny=bench-out/export-runs/avmnist-tiny --run resnet18=bench-out/export-runs/avmnist-resnet18 --methods percentile minmax --activations asymmetric --eval-limit 2000 --latency-repeats 300 --out bench-out/export-bench-asym

# Issue 4: the runtime on a replayed session with faults.
$EDGE train --method mla --preset tiny --dataset demo --epochs 8 --no-progress --out bench-out/rt-run --force
$EDGE export bench-out/rt-run --out bench-out/rt-engines --int8 on --dataset demo --no-progress --force
$PY benchmarks/runtime_bench.py --engines bench-out/rt-engines --out bench-out/runtime --precision fp32

# Issue 5: the profiler on the tiny and resnet18 engines (ONNX Runtime INT8 engines).
bash benchmarks/profile_bench.sh bench-out/export-bench-asym/tiny-percentile bench-out/export-bench-asym/resnet18-percentile bench-out/profile

# Issue 8: fault-aware fusion: reliability candidates x corruption suite, INT8 AUROC, extra engine cost.
$PY -m benchmarks.reliability_bench --data-dir "$DATA" --out bench-out/reliability --splits official speaker --seeds 0 1 2 --methods mla --limit 4000 --epochs 3 --test-limit 500 --fit-train 1500 --fit-val 600 --export --latency
# Issue 8, level and voice augmentation (the training default): FSDD speaker levels and
# audio accuracy under gain, then the harness at the issue's size for every method.
for sp in official speaker; do
  $PY -m benchmarks.reliability_bench --data-dir "$DATA" --out bench-out/reliability-aug2-$sp --splits $sp --seeds 0 1 2 --methods mla joint ogm_ge \
      --limit 20000 --epochs 3 --val-limit 2000 --test-limit 1000 --fit-train 4000 --fit-val 2000 --export
  $PY -m benchmarks.reliability_bench --data-dir "$DATA" --out bench-out/reliability-aug2mmp-$sp --splits $sp --seeds 0 1 2 --methods mmpareto \
      --limit 20000 --epochs 3 --val-limit 2000 --test-limit 1000 --fit-train 4000 --fit-val 2000
done
$PY -m benchmarks.level_bench --data-dir "$DATA" --runs bench-out/reliability-aug2-speaker/speaker/mla-s0 bench-out/reliability-aug2-speaker/speaker/mla-s1 bench-out/reliability-aug2-speaker/speaker/mla-s2
# The default since BENCHMARKS.md section 8 "Fitted weighting": the temperature on clean + perturbed
# validation and the fusion power fitted per run on validation. The same runs copied into
# bench-out/reliability-aug4-SPLIT/SPLIT/ (checkpoint.pt, config.json) so they refit. (The aug2 runs
# above were scored before it: today the same command needs --temperature-on-clean, and their
# default row is the fixed "w=r^3 floor 0.1" / "w=r^1.5 floor 0.1" one; aug3, the perturbed
# temperature under a fixed r^3, is aug4's "w=r^3 floor 0.1" row, identical to the digit.)
for sp in official speaker; do
  for m in mla joint ogm_ge mmpareto; do
    src=bench-out/reliability-aug2-$sp/$sp; [ $m = mmpareto ] && src=bench-out/reliability-aug2mmp-$sp/$sp
    for s in 0 1 2; do mkdir -p bench-out/reliability-aug4-$sp/$sp/$m-s$s; cp $src/$m-s$s/{checkpoint.pt,config.json} bench-out/reliability-aug4-$sp/$sp/$m-s$s/; done
  done
  $PY -m benchmarks.reliability_bench --data-dir "$DATA" --out bench-out/reliability-aug4-$sp --splits $sp --seeds 0 1 2 --methods mla joint ogm_ge mmpareto \
      --limit 20000 --epochs 3 --val-limit 2000 --test-limit 1000 --fit-train 4000 --fit-val 2000 --export
done
# rescore_aug4 NAME ARGS...: aug4's 24 runs copied into bench-out/NAME-SPLIT (checkpoint.pt and
# config.json only, so a newer reliability.json format refits them) and scored again with ARGS.
rescore_aug4() {
  local name=$1; shift
  for sp in official speaker; do
    for m in mla joint ogm_ge mmpareto; do
      for s in 0 1 2; do mkdir -p bench-out/$name-$sp/$sp/$m-s$s; cp bench-out/reliability-aug4-$sp/$sp/$m-s$s/{checkpoint.pt,config.json} bench-out/$name-$sp/$sp/$m-s$s/; done
    done
    $PY -m benchmarks.reliability_bench --data-dir "$DATA" --out bench-out/$name-$sp --splits $sp --seeds 0 1 2 --methods mla joint ogm_ge mmpareto \
        --limit 20000 --epochs 3 --val-limit 2000 --test-limit 1000 --fit-train 4000 --fit-val 2000 "$@"
  done
}
# The fault gate (the default since BENCHMARKS.md section 8 "Fault gate"): refitted (reliability.json
# format /3), scored and exported the same way.
rescore_aug4 reliability-gate --export
# ... and the streaming runtime with both fast paths off: the demo run (runtime-degraded4's) refitted,
# a new 90 s session with every fault (dead mic and black frames included), then the degraded session.
mkdir -p bench-out/runtime-gate/train-run && cp bench-out/runtime-degraded4/train-run/{checkpoint.pt,config.json} bench-out/runtime-gate/train-run/
.venv/bin/edge-mla export bench-out/runtime-gate/train-run --out bench-out/runtime-gate/engines --int8 on --dataset demo --no-progress --force
for prec in fp32 int8; do
  $PY benchmarks/runtime_bench.py --engines bench-out/runtime-gate/engines --out bench-out/runtime-gate-$prec --precision $prec \
      --segments 30 --segment-seconds 3 --frame-size 320x240 --blank-threshold 0 --silence-threshold 0 \
      $( [ $prec = int8 ] && echo --session bench-out/runtime-gate-fp32/session )
  $PY benchmarks/runtime_bench.py --engines bench-out/runtime-degraded5/engines --out bench-out/runtime-nogate-$prec --precision $prec \
      --session bench-out/runtime-gate-fp32/session --segments 30 --segment-seconds 3 --frame-size 320x240 --blank-threshold 0 --silence-threshold 0
  $PY benchmarks/runtime_bench.py --engines bench-out/runtime-gate/engines --out bench-out/runtime-degraded6-$prec --precision $prec --degraded \
      --session bench-out/runtime-degraded/session --segments 15 --segment-seconds 3 --frame-size 320x240 --blank-threshold 0 --silence-threshold 0
done
# The sum rule's reference r (BENCHMARKS.md section 8, "A reference r for the sum rule"): refitted
# (reliability.json format /4), each run scored with the reference at three quantiles besides the default;
# then official joint seed 0 rescored with the new default (it reproduces its 0.9 row).
rescore_aug4 reliability-refq --reference-quantiles 0.5 0.75 0.9
mkdir -p bench-out/reliability-refcheck-official/official/joint-s0 && cp bench-out/reliability-aug4-official/official/joint-s0/{checkpoint.pt,config.json} bench-out/reliability-refcheck-official/official/joint-s0/
$PY -m benchmarks.reliability_bench --data-dir "$DATA" --out bench-out/reliability-refcheck-official --splits official --seeds 0 --methods joint \
    --limit 20000 --epochs 3 --val-limit 2000 --test-limit 1000 --fit-train 4000 --fit-val 2000 --reference-quantiles 0.9
# ... and the streaming runtime on a sum-rule folder: tiny joint on the demo data, both fast paths off.
.venv/bin/edge-mla train --method joint --preset tiny --dataset demo --epochs 8 --out bench-out/runtime-joint/train-run --no-progress --force
.venv/bin/edge-mla export bench-out/runtime-joint/train-run --out bench-out/runtime-joint/engines --int8 on --dataset demo --no-progress --force
$PY benchmarks/runtime_bench.py --engines bench-out/runtime-joint/engines --out bench-out/runtime-joint-int8 --precision int8 \
    --session bench-out/runtime-gate-fp32/session --segments 30 --segment-seconds 3 --frame-size 320x240 --blank-threshold 0 --silence-threshold 0
$PY benchmarks/runtime_bench.py --engines bench-out/runtime-joint/engines --out bench-out/runtime-joint-degraded-int8 --precision int8 --degraded \
    --session bench-out/runtime-degraded/session --segments 15 --segment-seconds 3 --frame-size 320x240 --blank-threshold 0 --silence-threshold 0
# Feature-space distances beside the shipped Gaussian, on the same MLA runs (audio AUROC).
for sp in official speaker; do
  $PY -m benchmarks.feature_space_bench --data-dir "$DATA" --out bench-out/feature-space-$sp.json \
      --runs bench-out/reliability-aug2-$sp/$sp/mla-s0 bench-out/reliability-aug2-$sp/$sp/mla-s1 bench-out/reliability-aug2-$sp/$sp/mla-s2
done
# ... and five more (qda, class gap, frame-level, Gram), on the aug4 copies of the same checkpoints.
for sp in official speaker; do
  $PY -m benchmarks.feature_space_bench --data-dir "$DATA" --out bench-out/feature-space-local-$sp.json \
      --runs bench-out/reliability-aug4-$sp/$sp/mla-s0 bench-out/reliability-aug4-$sp/$sp/mla-s1 bench-out/reliability-aug4-$sp/$sp/mla-s2
done

# Issue 9: OpenVINO's runtime vs ONNX Runtime on the same ONNX files (OpenVINO is not a
# project dependency), and stations in one process vs separate processes, batched vs not.
$PY -m pip install -q openvino==2026.4.1
$PY benchmarks/openvino_bench.py --engines tiny=bench-out/export-bench-asym/tiny-percentile --engines resnet18=bench-out/export-bench-asym/resnet18-percentile --batches 1 8 --threads 1 --repeats 100 --out bench-out/openvino.json
$PY benchmarks/stations_bench.py --engines tiny=bench-out/rt-engines --stations 1 2 4 8 16 --modes one procs --seconds 15 --out bench-out/stations
$PY benchmarks/stations_bench.py --engines resnet18=bench-out/export-bench-asym/resnet18-percentile --stations 1 4 8 --modes one nobatch --seconds 15 --out bench-out/stations-r18

# Issue 10: MQTT to a local broker, broker restarts, metrics scrape, clip CPU, engine swap (~13 min).
$PY benchmarks/factory_bench.py --engines bench-out/rt-engines --out bench-out/factory --restarts 10 --restart-period 60
$PY benchmarks/factory_bench.py --engines bench-out/rt-engines --out bench-out/factory-2k --parts mqtt --mqtt-rate 2000

# Issue 12: faithful OGM-GE, MMPareto, and 2-process (torch.distributed) training, reduced size.
$PY benchmarks/train_bench.py --data-dir "$DATA" --out bench-out/train12 --splits official speaker --seeds 0 1 --limit 3000 --epochs 3 --jobs 2 --no-corrupt \
    --variants joint unimodal ogm_ge mmpareto mla mla_owm_norm mla_owm_norm_ddp2 --speaker-variants joint unimodal ogm_ge mmpareto mla mla_owm_norm

# Issue 11: sensor fault loops (PulseAudio mic + HTTP MJPEG camera unplugged/replugged) and a soak run.
nice -n 10 $PY benchmarks/fault_loop_bench.py fault --cycles 20 --hold 5 --out bench-out/fault
nice -n 10 $PY benchmarks/fault_loop_bench.py soak --minutes 60 --out bench-out/soak
nice -n 10 $PY benchmarks/fault_loop_bench.py soak --minutes 20 --stage-cap 5000 --out bench-out/soak-cap
