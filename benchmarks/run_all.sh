#!/usr/bin/env bash
# All benchmarks in one call, each writing benchmarks/results/<name>_<backend>.json with the
# machine it ran on (run it on a GPU/TPU host as it is: JAX picks the accelerator).
#
#   bash benchmarks/run_all.sh [MNIST_MANUAL_DIR]      # e.g. ../shared/data/mnist
#
# train.py: masked vs dense step (LeNet-300-100, Conv-2, ResNet-20), fit vs a bare scan,
#   the matmul peak, seeds (S = 1..32: vmap vs sequential vs S separate fits vs one alone,
#   FLOP/s as a share of the peak, the fastest strategy per S beside what "auto" picks),
#   LeNet-300-100 and ResNet-20 steps/s and FLOP/s on CIFAR-10-shaped data, one full
#   50,000-iteration LeNet-300-100 level (cold and warm). pruning.py: global magnitude masks vs NumPy.
#   process.py: cold and warm-cache wall time and fixed cost of `jaxticket train` (938
#   iterations, needs MNIST's files) and `jaxticket demo`.
# This is the one device check of issue 22: on a lent accelerator run it once, as it is,
# with a timeout (it is meant to take under 8 minutes there; `train.py --quick` took 6 minutes
# on the 2-core CPU of development, shared with a test run).
set -euo pipefail
cd "$(dirname "$0")/.."
MANUAL_DIR=${1:-${JAXTICKET_MANUAL_DIR:-../shared/data/mnist}}
BACKEND=$(python -c "import jax; print(jax.default_backend())")
mkdir -p benchmarks/results
python benchmarks/train.py --out "benchmarks/results/train_${BACKEND}.json"
python benchmarks/pruning.py --out "benchmarks/results/pruning_${BACKEND}.json"
python benchmarks/process.py --manual-dir "$MANUAL_DIR" --out "benchmarks/results/process_${BACKEND}.json"
echo "results in benchmarks/results/*_${BACKEND}.json"
