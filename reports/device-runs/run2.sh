#!/bin/bash
# Second device call: the ticket study with the per-layer threshold; the growth study at a 24M
# budget with and without deepening; the growth study at 12M with bf16 autocast (vs call 1's fp32).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } > $OUT/machine2.txt 2>&1
D=npz:.gpu/cifar15k.npz
T0=$(date +%s)
for w in 1 2 3; do
  timeout 450 python3 -m grownet study --kind ticket --relative-to layer --dataset $D --out /tmp/ticket-layer --seeds 3 --device cuda --quiet > /tmp/tl-w$w.log 2>&1 &
done
G="--dataset $D --recipe growth-study-cpu --data.limit_train 9000 --data.val_size 1000 --data.limit_test 0 --seeds 3 --device cuda --quiet"
timeout 450 python3 -m grownet study $G --budget.max_macs 24000000 --budget.max_rounds 4 --grow.deepen true --out /tmp/growth24-deepen > /tmp/g24d.log 2>&1 &
timeout 450 python3 -m grownet study $G --budget.max_macs 24000000 --budget.max_rounds 4 --grow.deepen false --out /tmp/growth24-nodeepen > /tmp/g24n.log 2>&1 &
timeout 450 python3 -m grownet study $G --grow.deepen false --run.amp bf16 --out /tmp/growth-bf16 > /tmp/gbf16.log 2>&1 &
wait
echo "studies: $(( $(date +%s) - T0 )) s" >> $OUT/machine2.txt
timeout 60 python3 -m grownet study --kind ticket --relative-to layer --dataset $D --out /tmp/ticket-layer --seeds 3 --device cuda --quiet > /tmp/tl-final.log 2>&1
cp /tmp/tl-*.log /tmp/ticket-layer/; cp /tmp/g24d.log /tmp/growth24-deepen/; cp /tmp/g24n.log /tmp/growth24-nodeepen/; cp /tmp/gbf16.log /tmp/growth-bf16/
tar czf $OUT/studies2.tgz --exclude='*.pt' --exclude='checkpoints' -C /tmp ticket-layer growth24-deepen growth24-nodeepen growth-bf16
for f in /tmp/tl-final.log /tmp/g24d.log /tmp/g24n.log /tmp/gbf16.log; do echo "== $f"; tail -n 6 $f; done
cat $OUT/machine2.txt
