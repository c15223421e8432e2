set -x
cd /work/main
for r in 1 2; do
  .venv/bin/python benchmarks/speed_of_checkout.py /tmp/base --section finetune --finetune-budget 60 --train-precisions fp32,bf16 --adapt-layers all,decoder -o runs/bench/ft/old-$r.json
  .venv/bin/python benchmarks/bench_speed.py --only finetune --layouts channels-last --finetune-budget 60 --train-precisions fp32,bf16 --adapt-layers all,decoder --output runs/bench/ft/new-$r
done
echo ALLDONE
