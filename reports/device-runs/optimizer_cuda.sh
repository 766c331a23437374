#!/bin/bash
# One device call (tenth session, issue 17): the optimizer benchmark on CUDA (the default
# path, foreach there, beside fused=True) and the CUDA tests of the optimizer, the loop,
# search, data, baseline and ticket.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; nproc; } > $OUT/machine.txt 2>&1
timeout 330 python3 benchmarks/optimizer_step.py --device cuda --runs 5 > $OUT/optimizer_step-cuda.log 2>&1
echo "benchmark rc $?" >> $OUT/machine.txt
timeout 200 python3 -m pytest -q -k cuda -p no:cacheprovider tests/test_optim.py tests/test_train.py tests/test_search.py \
  tests/test_data.py tests/test_baseline.py tests/test_ticket.py > $OUT/cuda-tests.log 2>&1
echo "tests rc $?" >> $OUT/machine.txt
cat $OUT/machine.txt; grep -E "sgd|context" $OUT/optimizer_step-cuda.log; tail -3 $OUT/cuda-tests.log
