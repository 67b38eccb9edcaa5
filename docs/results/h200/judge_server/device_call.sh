#!/usr/bin/env bash
# Judges forked from the judge server on a GPU: its own tests, the samples of problems 3 and 7 graded
# through verify (four at once: four servers), and the GPU faults graded in the sandbox.
set -uo pipefail
source scripts/gpu_runner_env.sh
R=$OUT/r; mkdir -p $R
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; bwrap --version; python3 -c "import torch, triton, nbgrader, sys; print('torch', torch.__version__, 'triton', triton.__version__, 'nbgrader', nbgrader.__version__, 'python', sys.version.split()[0])"; } > $R/versions.txt 2>&1
timeout 150 python3 -m pytest -q -ra -p no:cacheprovider tests/test_judge_server.py > $R/test_judge_server.log 2>&1; echo "rc $?" >> $R/test_judge_server.log
start=$(date +%s); timeout 240 python3 scripts/sample_scores.py --problems problem3 problem7 --jobs 4 --out $R/scores.json > $R/sample_scores.log 2>&1; echo "rc $? in $(( $(date +%s) - start )) s" >> $R/sample_scores.log
start=$(date +%s); COURSE_CELL_TIMEOUT_S=60 timeout 200 python3 -m pytest -q -ra -p no:cacheprovider tests/test_gpu_faults.py > $R/gpu_faults.log 2>&1; echo "rc $? in $(( $(date +%s) - start )) s" >> $R/gpu_faults.log
for f in $R/*.log; do echo "== $f"; tail -n 8 $f; done
tar czf $OUT/results.tgz -C $OUT r
