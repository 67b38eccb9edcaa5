#!/usr/bin/env bash
# The capstone's GPU tests, and the chapter executed on the GPU (its runs in CUDA graphs).
set -uo pipefail
source scripts/gpu_runner_env.sh
R=$OUT/r; mkdir -p $R
export OMP_NUM_THREADS=4
python3 - > $R/determinism.log 2>&1 <<'PY'
# Eager twice and graphed once, float32, the test's model: how far apart each pair lands.
from autograder import device
device.configure()
from autograder import problems
from autograder.capstone import Batches, CharText, GPTConfig, TrainConfig, attention_backend, train
text = CharText.load()
kernels = problems.reference_module("problem7")
mc = GPTConfig(text.vocab_size, context=128, n_layer=2, n_head=4, head_dim=64)
eager = TrainConfig(steps=16, batch_size=8, lr=3e-3, warmup_steps=3, precision="float32", device="cuda", untimed_steps=3)
b = Batches(text.split()[0], eager.batch_size, mc.context, eager.steps, seed=eager.seed)
for backend in ("course", "sdpa-math"):
    att = attention_backend(backend, kernels)
    a = train("a", att, mc, eager, b).losses
    a2 = train("a2", att, mc, eager, b).losses
    g = train("g", att, mc, TrainConfig(**{**vars(eager), "cuda_graph": True}), b).losses
    print(backend, "eager vs eager", max(abs(x - y) for x, y in zip(a, a2)), "eager vs graph", [f"{abs(x - y):.1e}" for x, y in zip(a, g)])
PY
cat $R/determinism.log
python3 -m pytest -q -ra -p no:cacheprovider tests/test_capstone.py > $R/tests.log 2>&1; echo "tests rc $?" >> $R/tests.log
tail -5 $R/tests.log
start=$(date +%s)
( cd notebooks/capstone && python3 -m jupyter nbconvert --to notebook --execute capstone.ipynb --output-dir $R --output capstone_executed.ipynb --ExecutePreprocessor.timeout=900 ) > $R/chapter.log 2>&1; echo "chapter rc $? in $(( $(date +%s) - start )) s" >> $R/chapter.log
tail -5 $R/chapter.log
python3 - <<'PY' > $R/chapter_outputs.txt 2>&1
import json, os
nb = json.load(open(os.environ["OUT"] + "/r/capstone_executed.ipynb"))
for i, c in enumerate(nb["cells"]):
    for o in c.get("outputs", []):
        text = o.get("text") or "".join(o.get("data", {}).get("text/plain", ""))
        if text: print(f"--- cell {i}\n{''.join(text)[:2000]}")
PY
tail -30 $R/chapter_outputs.txt
for mode in plain graph; do
  flag=""; [ $mode = graph ] && flag="--cuda-graph"
  python3 scripts/train_capstone.py $R/$mode $flag > $R/$mode.log 2>&1; echo "rc $?" >> $R/$mode.log
  python3 scripts/train_capstone.py $R/gpt2_$mode --layers 6 --heads 12 --head-dim 64 --context 1024 --batch-size 16 --steps 300 $flag > $R/gpt2_$mode.log 2>&1; echo "rc $?" >> $R/gpt2_$mode.log
done
for f in $R/plain.log $R/graph.log $R/gpt2_plain.log $R/gpt2_graph.log; do echo "== $f"; tail -n 4 $f; done
tar czf $OUT/results.tgz -C $OUT r
