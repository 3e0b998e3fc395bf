#!/usr/bin/env bash
# Frankle & Carbin (2019), Figures 3-4: winning tickets of LeNet-300-100 on MNIST.
# IMP with reset to initialisation (k = 0), 20 levels of layer-wise pruning (20% hidden,
# 10% output per level), then the random-reinitialisation and random-mask controls at a
# few levels, and the density-vs-accuracy table and plots.
#
# Needs the four canonical MNIST files: MANUAL_DIR (default ../shared/data/mnist).
# Runtime on 2 CPU cores: about 100 s per level (50K iterations, evaluation every 100).
# Expected: ~98% test accuracy dense; the tickets keep it down to a few percent of the
# weights, while reinitialised and random-mask subnetworks degrade much sooner.
set -euo pipefail
MANUAL_DIR=${MANUAL_DIR:-../shared/data/mnist}
WORKDIR=${WORKDIR:-runs/lenet_300_100_mnist}
jaxticket imp --config lenet_300_100_mnist --workdir "$WORKDIR" --manual-dir "$MANUAL_DIR" "$@"
jaxticket branch "$WORKDIR" --kind reinit --levels 3 7 12 15 18 --manual-dir "$MANUAL_DIR"
jaxticket branch "$WORKDIR" --kind random_mask --levels 3 7 12 15 18 --manual-dir "$MANUAL_DIR"
jaxticket report "$WORKDIR"
