#!/bin/bash
# reports/cifar10-gpu-study/: the reference VGG recipe (cifar10-vgg with --max-rounds 3, as
# reports/cifar10-gpu) on all of CIFAR-10 over seeds, with its controls (scratch, uniform,
# random and fixed_uniform: the uniform widths trained on the grower's own schedule), plus
# data_throughput's GPU figure and a time-budget search, in calls of the device tool on one
# warm machine. The tree carries at most 64 MiB a call and holds ~27 MB of its own, so the
# data travels in three parts (cifar_pack.py pack ../shared/data/cifar-10-batches-py .gpu/p3 --parts 3).
# As run on the lent H200 (2026-11-26, 852 s of the 900 s device budget in all):
#   call 1: bash reports/device-runs/cifar10_gpu_study.sh receive 0   (carry .gpu/p3/cifar10-part0.xz)
#   call 2: bash reports/device-runs/cifar10_gpu_study.sh receive 1   (carry .gpu/p3/cifar10-part1.xz)
#   call 3: SEEDS="0 1" LIMIT=320 bash reports/device-runs/cifar10_gpu_study.sh search   (carry part 2; 287 s)
#   call 4: SEEDS="0 1" LIMIT=400 bash reports/device-runs/cifar10_gpu_study.sh controls  (uniform, fixed_uniform; 232 s)
#   call 5: the same loop for scratch and random with LIMIT=262 (typed inline then; this is
#           SEEDS="0 1" CONTROLS="scratch random" LIMIT=262 ... controls; 252 s)
# Processes share the GPU side by side (the nets are launch-bound: one uses a fraction of it).
# The study page was made afterwards on the CPU machine: grownet study --recipe cifar10-vgg
# --dataset cifar10 --data-dir /tmp/data --max-rounds 3 --seeds 2 --arms scratch,uniform,random,fixed_uniform
# --out reports/cifar10-gpu-study (it reads the finished runs back and trains nothing).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
STUDY=/tmp/study
SEEDS=${SEEDS:-0 1 2}
TB=${TB:-240}          # the time-budget search's budget, seconds
LIMIT=${LIMIT:-330}    # each training process's wall-clock limit, seconds
CONTROLS=${CONTROLS:-uniform fixed_uniform}
ARGS="--recipe cifar10-vgg --dataset cifar10 --data-dir /tmp/data --device cuda --quiet"
T0=$(date +%s)
case "$1" in
receive)
  mkdir -p /tmp/parts && cp ".gpu/p3/cifar10-part$2.xz" /tmp/parts/ && ls -la /tmp/parts
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; nproc; } > "$OUT/machine.txt" 2>&1
  cat "$OUT/machine.txt" ;;
search)
  cp .gpu/p3/cifar10-part2.xz /tmp/parts/
  python3 reports/device-runs/cifar_pack.py unpack /tmp/parts/cifar10-part*.xz /tmp/data/cifar-10-batches-py || exit 1
  echo "unpacked: $(( $(date +%s) - T0 )) s"
  timeout 150 python3 benchmarks/data_throughput.py --data /tmp/data --device cuda --workers 8 --epoch-images 50000 \
    > "$OUT/data_throughput-cuda.log" 2>&1
  echo "data_throughput: rc $?, $(( $(date +%s) - T0 )) s"; tail -n 3 "$OUT/data_throughput-cuda.log"
  for s in $SEEDS; do
    timeout "$LIMIT" python3 -m grownet search $ARGS --max-rounds 3 --seed "$s" --out "$STUDY/seed-$s" > "/tmp/search-$s.log" 2>&1 &
  done
  timeout "$LIMIT" python3 -m grownet search $ARGS --time-budget "$TB" --out /tmp/time-budget > /tmp/search-time-budget.log 2>&1 &
  wait
  echo "searches: $(( $(date +%s) - T0 )) s"
  mkdir -p /tmp/logs && cp /tmp/search-*.log /tmp/logs/
  tar czf "$OUT/searches.tgz" --exclude='checkpoints' --exclude='*.pt' -C /tmp study time-budget logs
  for f in /tmp/search-*.log; do echo "$f: $(grep -c 'epoch' "$f") epoch lines"; tail -n 1 "$f"; done
  grep -h "stop growing\|check .*: grow" /tmp/search-time-budget.log | tail -n 4 ;;
controls)
  for s in $SEEDS; do  # a search the last call's limit stopped continues from its checkpoint first
    [ -e "$STUDY/seed-$s/summary.json" ] || timeout "$LIMIT" python3 -m grownet search --resume --out "$STUDY/seed-$s" --quiet \
      > "/tmp/resume-$s.log" 2>&1 &
  done
  wait
  for s in $SEEDS; do
    for c in $CONTROLS; do
      timeout "$LIMIT" python3 -m grownet baseline "$STUDY/seed-$s" --control "$c" --device cuda --quiet --no-report \
        > "/tmp/control-$c-$s.log" 2>&1 &
    done
  done
  wait
  echo "controls: $(( $(date +%s) - T0 )) s"
  mkdir -p /tmp/logs && cp /tmp/control-*.log /tmp/logs/ && cp /tmp/resume-*.log /tmp/logs/ 2>/dev/null
  tar czf "$OUT/study.tgz" --exclude='checkpoints' --exclude='*.pt' -C /tmp study logs
  for f in /tmp/control-*.log; do echo "$f: $(tail -n 1 "$f")"; done ;;
esac
