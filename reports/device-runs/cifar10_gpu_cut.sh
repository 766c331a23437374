#!/bin/bash
# Fourteenth session: the time budget's cut (thirteenth session) on a lent GPU, against the
# held run of reports/cifar10-gpu-study/time-budget (`--time-budget 240`, before the cut: check 2
# held at 7.79M MACs, 83.57% test, 201 s), plus the CUDA tests at this code. The tree is 37 MB
# now, so the lossless CIFAR-10 pack (cifar_pack.py pack ../shared/data/cifar-10-batches-py
# .gpu/p3 --parts 3) travels as four byte chunks of its three parts, one per call
# (cat .gpu/p3/cifar10-part{0,1,2}.xz | split -b 25700000 -d -a 1 - .gpu/c4/chunk):
#   call 1: bash reports/device-runs/cifar10_gpu_cut.sh receive 0   (carry .gpu/c4/chunk0; and the CUDA tests)
#   calls 2, 3: ... receive 1, receive 2                             (carry chunk1, chunk2)
#   call 4: bash reports/device-runs/cifar10_gpu_cut.sh search     (carry chunk3)
# The two searches of call 4 run side by side on the one GPU (as the held run ran beside two
# other searches), with budgets of 240 s (the held run's) and 200 s.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
SIZES=(34242000 34224332 34166460)  # the three parts' byte sizes, in order
LIMIT=${LIMIT:-300}
ARGS="--recipe cifar10-vgg --dataset cifar10 --data-dir /tmp/data --device cuda --quiet"
T0=$(date +%s)
case "$1" in
receive)
  mkdir -p /tmp/chunks && cp ".gpu/c4/chunk$2" /tmp/chunks/ && ls -l /tmp/chunks
  if [ "$2" = 0 ]; then
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; nproc; } > "$OUT/machine.txt" 2>&1
    cat "$OUT/machine.txt"
    timeout 200 python3 -m pytest -q -o addopts="" -p no:cacheprovider -k cuda tests > "$OUT/cuda-tests.log" 2>&1
    echo "tests rc $?, $(( $(date +%s) - T0 )) s"; tail -n 3 "$OUT/cuda-tests.log"
  fi ;;
search)
  cp .gpu/c4/chunk3 /tmp/chunks/ && mkdir -p /tmp/parts && cat /tmp/chunks/chunk0 /tmp/chunks/chunk1 /tmp/chunks/chunk2 \
    /tmp/chunks/chunk3 > /tmp/all.xz
  off=0
  for i in 0 1 2; do
    tail -c +$((off + 1)) /tmp/all.xz | head -c "${SIZES[$i]}" > "/tmp/parts/cifar10-part$i.xz"; off=$((off + SIZES[i]))
  done
  sha256sum /tmp/parts/*.xz | cut -c1-16
  python3 reports/device-runs/cifar_pack.py unpack /tmp/parts/cifar10-part*.xz /tmp/data/cifar-10-batches-py || exit 1
  echo "unpacked: $(( $(date +%s) - T0 )) s"
  for tb in 240 200; do
    timeout "$LIMIT" python3 -m grownet search $ARGS --time-budget "$tb" --out "/tmp/tb$tb" > "/tmp/search-tb$tb.log" 2>&1 &
  done
  wait
  echo "searches: $(( $(date +%s) - T0 )) s"
  mkdir -p /tmp/logs && cp /tmp/search-*.log /tmp/logs/
  tar czf "$OUT/searches.tgz" --exclude='checkpoints' --exclude='*.pt' -C /tmp tb240 tb200 logs
  for tb in 240 200; do
    echo "== $tb"; grep -h "time budget\|stop growing\|grew to\|done:" "/tmp/search-tb$tb.log" | cut -c1-400 | tail -n 12
  done ;;
esac
