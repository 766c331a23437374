#!/bin/bash
# One device call: the ticket study (3 workers sharing one folder on one GPU) and the growth
# study with and without deepening (issue 13), on the first 15,000 / 4,000 CIFAR-10 images.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; nproc; } > $OUT/machine.txt 2>&1
D=npz:.gpu/cifar15k.npz
T0=$(date +%s)
for w in 1 2 3; do
  timeout 470 python3 -m grownet study --kind ticket --dataset $D --out /tmp/ticket-cpu --seeds 3 --device cuda --quiet > /tmp/ticket-w$w.log 2>&1 &
done
G="--dataset $D --recipe growth-study-cpu --data.limit_train 9000 --data.val_size 1000 --data.limit_test 0 --seeds 3 --device cuda --quiet"
timeout 470 python3 -m grownet study $G --grow.deepen true --out /tmp/growth-deepen > /tmp/deepen.log 2>&1 &
timeout 470 python3 -m grownet study $G --grow.deepen false --out /tmp/growth-nodeepen > /tmp/nodeepen.log 2>&1 &
wait
echo "studies: $(( $(date +%s) - T0 )) s" >> $OUT/machine.txt
timeout 60 python3 -m grownet study --kind ticket --dataset $D --out /tmp/ticket-cpu --seeds 3 --device cuda --quiet > /tmp/ticket-final.log 2>&1
cp /tmp/ticket-w*.log /tmp/deepen.log /tmp/nodeepen.log /tmp/ticket-final.log /tmp/ticket-cpu/ 2>/dev/null
tar czf $OUT/studies.tgz --exclude='*.pt' --exclude='checkpoints' -C /tmp ticket-cpu growth-deepen growth-nodeepen
tail -12 /tmp/ticket-final.log /tmp/deepen.log /tmp/nodeepen.log; tail -3 /tmp/ticket-w*.log
cat $OUT/machine.txt; ls -la $OUT
