#!/usr/bin/env bash
# Paganini & Forde (2020): different pruning techniques find different subnetworks.
# Four IMP lineages of LeNet-300-100 on MNIST (L1 unstructured layer-wise, L1 global,
# L2-structured units, random unstructured), then mask similarity, prediction agreement,
# ensembles of the subnetworks, weight trajectories and connectivity at the last level.
set -euo pipefail
MANUAL_DIR=${MANUAL_DIR:-../shared/data/mnist}
ROOT=${ROOT:-runs/which_ticket}
STEPS=${STEPS:-10000}
LEVELS=${LEVELS:-5}
declare -A PRUNERS=(
  [l1_layer]='{"method": "partition", "rules": [["^output/kernel$", {"method": "magnitude", "fraction": 0.1}], ["kernel$", {"method": "magnitude", "fraction": 0.2}]]}'
  [l1_global]='{"method": "magnitude", "fraction": 0.2, "scope": "global"}'
  [l2_structured]='{"method": "partition", "rules": [["^output/kernel$", null], ["kernel$", {"method": "ln_structured", "fraction": 0.2, "n": 2}]]}'
  [random]='{"method": "random", "fraction": 0.2}'
)
for name in l1_layer l1_global l2_structured random; do
  jaxticket imp --config lenet_300_100_mnist --workdir "$ROOT/$name" --manual-dir "$MANUAL_DIR" \
      --steps "$STEPS" --levels "$LEVELS" --set "pruner=${PRUNERS[$name]}" "$@"
done
jaxticket compare "$ROOT"/l1_layer "$ROOT"/l1_global "$ROOT"/l2_structured "$ROOT"/random \
    --out "$ROOT/compare" --manual-dir "$MANUAL_DIR"
