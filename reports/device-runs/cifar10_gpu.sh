#!/bin/bash
# reports/cifar10-gpu/: the reference VGG recipe (cifar10-vgg) on full CIFAR-10 on a lent GPU,
# then its controls, in three calls of the device tool on one warm machine (its tree carries at
# most 64 MiB, so the data travels in two parts: reports/device-runs/cifar_pack.py).
#   call 1: bash reports/device-runs/cifar10_gpu.sh receive   (carry .gpu/cifar10-part0.xz)
#   call 2: bash reports/device-runs/cifar10_gpu.sh search    (carry .gpu/cifar10-part1.xz)
#   call 3: bash reports/device-runs/cifar10_gpu.sh controls
# The published run (reports/cifar10-gpu) is these defaults: --max-rounds 3 (EXTRA) so that the
# search and its controls fit the session's 15 device minutes, no time budget (BUDGET=0);
# everything else is the recipe's. The first two tries, with BUDGET=170 and 290, grew nothing
# (the time check's MACs scaling, fixed since; their logs are in reports/cifar10-gpu/device/).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
RUN=/tmp/cifar10-gpu
BUDGET=${BUDGET:-0}
EXTRA=${EXTRA:---max-rounds 3}
T0=$(date +%s)
case "$1" in
receive)
  mkdir -p /tmp/parts && cp .gpu/cifar10-part0.xz /tmp/parts/ && ls -la /tmp/parts
  { nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; nproc; } > $OUT/machine.txt 2>&1
  cat $OUT/machine.txt ;;
search)
  if [ ! -e /tmp/data/cifar-10-batches-py/test_batch ]; then
    cp .gpu/cifar10-part1.xz /tmp/parts/
    python3 reports/device-runs/cifar_pack.py unpack /tmp/parts/cifar10-part0.xz /tmp/parts/cifar10-part1.xz \
      /tmp/data/cifar-10-batches-py || exit 1
  fi
  echo "unpacked: $(( $(date +%s) - T0 )) s"
  timeout 480 python3 -m grownet search --recipe cifar10-vgg --dataset cifar10 --data-dir /tmp/data \
    --out $RUN --time-budget $BUDGET $EXTRA --device cuda --quiet > /tmp/search.log 2>&1
  echo "search: rc $?, $(( $(date +%s) - T0 )) s"
  cp /tmp/search.log $OUT/
  tar czf $OUT/search.tgz --exclude='checkpoints' --exclude='*.pt' -C /tmp cifar10-gpu
  tail -n 15 /tmp/search.log ;;
controls)
  for c in seed scratch uniform random; do
    timeout ${CONTROL_LIMIT:-420} python3 -m grownet baseline $RUN --control $c --device cuda --quiet --no-report > /tmp/control-$c.log 2>&1 &
  done
  wait
  echo "controls: $(( $(date +%s) - T0 )) s"
  python3 -m grownet report $RUN --quiet
  cp /tmp/control-*.log $OUT/
  tar czf $OUT/controls.tgz --exclude='checkpoints' --exclude='*.pt' -C /tmp cifar10-gpu
  for c in seed scratch uniform random; do tail -n 2 /tmp/control-$c.log; done ;;
esac
