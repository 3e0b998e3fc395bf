"""Level reachability (jaxticket.pruning.reachability): the counts alone say by which level a
pruner must empty a layer; checked against the command's check of before and against
pruning for real."""

import math

import jax
import numpy as np
import pytest

from jaxticket import masks, pruning


def cli_reference(pruner, mask, deepest):
    """The command's ``_check_levels_reachable`` before it moved to the library (commit
    244c3ba, jaxticket/cli.py:527-566): the level it refused at, or None."""
    per_level = [pruning.for_level(pruner, level) for level in range(1, deepest + 1)]
    layers = [int(leaf.size) for leaf, prunable in zip(mask.leaves(), mask.prunable) if prunable]
    total = None
    for level, step in enumerate(per_level, start=1):
        if not isinstance(step, (pruning.Magnitude, pruning.RandomUnstructured)) or step.allows_empty:
            return None
        if step.scope == "global":
            total = sum(layers) if total is None else total
            total -= int(pruning.removal_count(step.fraction, total, step.rounding))
            empty = total < len(layers)
        elif total is None:
            layers = [c - int(pruning.removal_count(step.fraction, c, step.rounding)) for c in layers]
            empty = min(layers, default=1) < 1
        else:
            return None
        if empty:
            return level
    return None


SHAPES = {  # LeNet-300-100, LeNet-5's kernels, a tiny pair
    "lenet_300_100": {"fc1": (784, 300), "fc2": (300, 100), "output": (100, 10)},
    "lenet5": {"conv1": (3, 3, 1, 6), "conv2": (3, 3, 6, 16), "fc1": (400, 120), "fc2": (120, 84), "output": (84, 10)},
    "tiny": {"a": (10, 10), "b": (2, 2)},
}


def ones(name):
    return masks.ones_like({k: {"kernel": np.zeros(s, np.float32), "bias": np.zeros(s[-1], np.float32)}
                            for k, s in SHAPES[name].items()})


def cli_cases():
    steps = [pruning.magnitude(f, scope, rounding=r) for f in (0.2, 0.5, 0.75, 0.9) for scope in ("layer", "global")
             for r in ("half_up", "half_even", "ceil")]
    steps += [pruning.random(0.5), pruning.random(0.8, "global", rounding="ceil"), pruning.magnitude(0.5, allow_empty=True)]
    cases = [(repr(s), s) for s in steps]
    cases += [("per_level layer then global", pruning.per_level([pruning.magnitude(0.5)] * 3 + [pruning.magnitude(0.7, "global")] * 27)),
              ("per_level global then layer", pruning.per_level([pruning.magnitude(0.5, "global")] * 2 + [pruning.magnitude(0.9)] * 28)),
              ("to_density", pruning.to_density(1e-6, 30)),
              ("to_density layer", pruning.to_density(1e-4, 30, pruning.magnitude(0.2, rounding="ceil"))),
              ("ln_structured (no bound)", pruning.ln_structured(0.9)),
              ("a callable (no bound)", pruning.as_pruner(lambda p, m, k: m))]
    return cases


@pytest.mark.parametrize("shapes", sorted(SHAPES))
@pytest.mark.parametrize("label, pruner", cli_cases(), ids=[c[0] for c in cli_cases()])
def test_the_command_check_of_before_is_reproduced(label, pruner, shapes):
    mask = ones(shapes)
    for deepest in (1, 3, 10, 30):
        assert pruning.first_emptying_level(pruner, mask, deepest) == cli_reference(pruner, mask, deepest)


def run_until_refused(pruner, params, levels):
    """The level at which pruning for real refuses (PruningError: a layer emptied), or None."""
    mask = masks.ones_like(params)
    for level in range(1, levels + 1):
        try:
            mask = pruning.for_level(pruner, level)(params, mask, jax.random.key(level))
        except pruning.PruningError:
            return level
    return None


def real_params(name, seed=0):
    rng = np.random.default_rng(seed)
    return {k: {"kernel": rng.standard_normal(s).astype(np.float32), "bias": np.zeros(s[-1], np.float32)}
            for k, s in SHAPES[name].items()}


@pytest.mark.parametrize("label, shapes, pruner, exact", [
    # Frankle & Carbin's rates as a partition (the command could not tell before): per layer, exact
    ("partition", "lenet5", pruning.partition([("^output/", pruning.magnitude(0.5)), ("kernel$", pruning.magnitude(0.75))]), True),
    ("chain", "lenet5", pruning.chain(pruning.magnitude(0.5), pruning.random(0.5)), True),
    ("chain", "tiny", pruning.chain(pruning.magnitude(0.5), pruning.random(0.5)), True),
    ("by_score", "lenet5", pruning.by_score(lambda w, key: w * w, 0.75), True),
    ("partition of global", "tiny", pruning.partition([("^a/", pruning.magnitude(0.7, "global")), ("^b/", pruning.random(0.6))]), True),
    # global: the counts say by which level a layer must be empty; the weights may empty one sooner
    ("global", "tiny", pruning.magnitude(0.6, "global"), False),
    ("global", "lenet5", pruning.magnitude(0.6, "global"), False),
    ("chain of global", "lenet5", pruning.chain(pruning.random(0.4, "global"), pruning.magnitude(0.5, "global")), False),
])
def test_the_predicted_level_is_where_pruning_for_real_refuses(label, shapes, pruner, exact):
    params = real_params(shapes)
    predicted = pruning.first_emptying_level(pruner, masks.ones_like(params), 40)
    actual = run_until_refused(pruner, params, 40)
    assert predicted is not None, actual
    if exact:
        assert actual == predicted
    else:
        assert actual is not None and actual <= predicted


def test_unknown_after_a_global_step_then_a_layer_step():
    # per layer after global (inside one level's chain): the layers' counts are not known
    mask = ones("lenet5")
    assert pruning.first_emptying_level(pruning.chain(pruning.magnitude(0.5), pruning.random(0.6, "global")), mask, 40) is None


def test_snip_counts_like_magnitude():
    mask = ones("lenet5")
    for scope in ("layer", "global"):
        want = pruning.first_emptying_level(pruning.magnitude(0.8, scope), mask, 30)
        assert want is not None
        assert pruning.first_emptying_level(pruning.snip(0.8, scope=scope), mask, 30) == want
        assert pruning.first_emptying_level(pruning.synflow(0.8, scope=scope), mask, 30) == want


def test_survivors_tell_counts_and_pools():
    mask = ones("tiny")
    kernels = [i for i, f in enumerate(mask.prunable) if f]
    known = pruning.Survivors.of(mask)
    assert [known.counts[i] for i in kernels] == [100, 4] and known.pools == ()
    after = pruning.magnitude(0.5).survivors(known)
    assert [after.counts[i] for i in kernels] == [50, 2] and not after.emptied()
    pooled = pruning.magnitude(0.5, "global").survivors(after)
    assert [pooled.counts[i] for i in kernels] == [None, None] and pooled.pools == ((tuple(kernels), 26),)
    assert pruning.magnitude(0.5).survivors(pooled) is None  # per layer after a global step: unknown
    assert pruning.ln_structured(0.5).survivors(known) is None  # channels: not from counts
    assert pruning.magnitude(0.2).removes(11) == 2 and pruning.magnitude(0.2, rounding="ceil").removes(11) == 3


def test_check_levels_reachable_names_the_level_and_the_setting():
    mask = ones("tiny")
    pruning.check_levels_reachable(pruning.magnitude(0.5), mask, 2)  # b: 4, 2, 1 left
    with pytest.raises(pruning.UnreachableLevelError) as e:
        pruning.check_levels_reachable(pruning.magnitude(0.5), mask, 5)
    assert isinstance(e.value, pruning.PruningError) and (e.value.levels, e.value.level, e.value.reason) == (5, 3, "empties")
    assert str(e.value).startswith('levels=5: the pruner {"method": "magnitude", "fraction": 0.5} leaves too few '
                                   "weights for every prunable layer by level 3 (it would empty a layer); choose "
                                   "levels=2 or fewer")
    pruning.check_levels_reachable(pruning.magnitude(0.5), mask, 5, allow_empty=True)
    pruning.check_levels_reachable(pruning.magnitude(0.5, allow_empty=True), mask, 5)
    pruning.check_levels_reachable(pruning.magnitude(0.5), mask, 0)
    schedule = pruning.per_level([pruning.magnitude(0.1)] * 3)
    with pytest.raises(pruning.UnreachableLevelError, match=r"^levels=5: the pruner's level schedule stops before "
                       r"level 4 \(per_level: level 4 has no pruner; the schedule holds 3 levels\); choose levels=3 "
                       r"or fewer") as e:
        pruning.check_levels_reachable(schedule, mask, 5, allow_empty=True)  # a short schedule: always an error
    assert (e.value.level, e.value.reason) == (4, "schedule")
    with pytest.raises(pruning.UnreachableLevelError, match="level schedule stops before level 3"):
        pruning.check_levels_reachable(pruning.to_density(0.5, 2), mask, 3)
    assert math.isclose(pruning.to_density(0.5, 2).fraction, 1 - 0.5 ** 0.5)
