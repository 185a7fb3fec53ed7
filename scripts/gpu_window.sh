#!/usr/bin/env bash
# One GPU window of a queue (docs/results.md, "A GPU window"): on a bare, offline CUDA machine with PyTorch, from the
# repository root, with `make gpu-carry`'s folder .gpu/ beside it (the missing wheels and MNIST):
#   OUT=<folder that comes back> [BUDGET_S=480] [BENCH_STEPS=600] bash scripts/gpu_window.sh [QUEUE]
# BENCH_STEPS first measures train.py's images/s, eager against compiled (benchmarks/entry_speed.py, $OUT/bench.md),
# out of the same budget.
# Advances the queue by what fits the budget (scores too where the Inception weights are), then packs its output
# folder into $OUT/results.tgz.NN, parts of at most 15 MiB, and the state of a training the budget cut off into
# $OUT/state.tgz.NN: `cat results.tgz.* | tar xzf -` (then state.tgz.*) in the repository root puts them back.
set -euo pipefail
queue=${1:-results/paper_queue.yaml}
out=${OUT:?set OUT to the folder whose files come back}
budget=${BUDGET_S:-480}   # the call's 600 s, less the grace of a piece cut at the end (60 s) and the packing
python=${PYTHON:-python3}

if compgen -G ".gpu/*.whl" >/dev/null; then  # hydra-core, omegaconf, antlr4: missing on the machine
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -f .gpu/mnist.tgz ] && [ ! -d data/MNIST ]; then
  mkdir -p data && tar xzf .gpu/mnist.tgz -C data
fi
kinds=train,sample
[ -f data/evaluators/inception_default_1.pt ] && kinds=train,sample,score
if command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi

start=$SECONDS
if [ -n "${BENCH_STEPS:-}" ]; then
  "$python" -m benchmarks.entry_speed --steps "$BENCH_STEPS" | tee "$out/bench.md" || true
fi
budget=$((budget - (SECONDS - start)))

status=0
PYTHONUNBUFFERED=1 "$python" -m diffusion.queue "$queue" --budget-s "$budget" --kinds "$kinds" 2>&1 \
  | tee "$out/queue.log" || status=$?
# the output folder as the repository names it (results/paper), so that it unpacks in place
folder=$("$python" -c 'import sys; from diffusion.queue import Queue, ROOT; o = Queue(sys.argv[1]).out
print(o.relative_to(ROOT) if o.is_relative_to(ROOT) else o)' "$queue")
if [ -d "$folder" ]; then  # records, weights and shards; apart from them, the state of a training cut by the budget
  tar czf - --exclude='*/checkpoints' "$folder" | split -b 15M -d - "$out/results.tgz."
  state=$(find "$folder" -path '*/checkpoints/last.ckpt')
  if [ -n "$state" ]; then tar czf - $state | split -b 15M -d - "$out/state.tgz."; fi
  ls -l "$out"
fi
exit "$status"
