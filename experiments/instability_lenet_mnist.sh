#!/usr/bin/env bash
# Frankle et al. (2020), "Linear mode connectivity and the lottery ticket hypothesis":
# instability of LeNet-300-100 on MNIST, dense and IMP subnetworks, vs the rewind step k.
# Two copies per state, trained with different data orders; error barrier on 30 points.
# The paper finds LeNet stable at k = 0 both dense and sparse (barriers ~0).
#
# STEPS shortens training (default 10000 iterations: F&C's LeNet early-stops by then).
set -euo pipefail
MANUAL_DIR=${MANUAL_DIR:-../shared/data/mnist}
WORKDIR=${WORKDIR:-runs/instability_lenet_mnist}
STEPS=${STEPS:-10000}
jaxticket instability --config lenet_300_100_mnist --workdir "$WORKDIR" --manual-dir "$MANUAL_DIR" \
    --steps "$STEPS" --ks 0 100 500 --levels 0 3 7 --copies 2 "$@"
