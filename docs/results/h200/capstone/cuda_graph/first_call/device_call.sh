#!/usr/bin/env bash
# The capstone with and without the step in a CUDA graph, at its own size and at GPT-2 small's attention shape.
set -uo pipefail
source scripts/gpu_runner_env.sh
R=$OUT/r; mkdir -p $R
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton, sys; print('torch', torch.__version__, 'triton', triton.__version__, 'python', sys.version.split()[0])"; } > $R/gpu.txt 2>&1
export OMP_NUM_THREADS=4
python3 -m pytest -q -ra -p no:cacheprovider tests/test_capstone.py > $R/tests.log 2>&1; echo "tests rc $?" >> $R/tests.log
python3 scripts/train_capstone.py $R/plain > $R/plain.log 2>&1; echo "rc $?" >> $R/plain.log
python3 scripts/train_capstone.py $R/graph --cuda-graph > $R/graph.log 2>&1; echo "rc $?" >> $R/graph.log
G2="--layers 6 --heads 12 --head-dim 64 --context 1024 --batch-size 16 --steps 300"
python3 scripts/train_capstone.py $R/gpt2_plain $G2 > $R/gpt2_plain.log 2>&1; echo "rc $?" >> $R/gpt2_plain.log
python3 scripts/train_capstone.py $R/gpt2_graph $G2 --cuda-graph > $R/gpt2_graph.log 2>&1; echo "rc $?" >> $R/gpt2_graph.log
tail -3 $R/*.log
tar czf $OUT/results.tgz -C $OUT r
