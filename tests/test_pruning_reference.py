"""jaxticket.pruning against torch.nn.utils.prune, without torch.

The expected masks below were computed with torch 2.13.0's ``torch.nn.utils.prune``
(``l1_unstructured``, ``ln_structured(dim=0)``, ``global_unstructured(L1Unstructured)``),
applied iteratively to the same module (its PruningContainer prunes ``round(amount *
survivors)``, Python's round of a float product), on weights in torch layout (Linear
``[out, in]``, Conv ``[O, I, H, W]``); here they are transposed to flax layout (Dense
``[in, out]``, Conv ``[H, W, I, O]``). The weights have distinct magnitudes, so ties (broken
differently by torch's topk and jaxticket) do not arise. The torch script that printed them
is at the end of this file (it needs torch; the tests do not).
"""

import math

import numpy as np
import pytest

from jaxticket import masks, pruning

FC = np.array([[-1.05, 0.34, 1.41, -1.45, -0.21], [-0.63, -1.76, 0.73, -0.02, 0.07],
               [-0.75, 0.45, -0.54, -0.14, -1.11], [-1.22, 1.34, -0.51, 0.29, -0.03]], np.float32)  # Linear(5, 4)
FC2 = np.array([[-1.25, 0.86, 0.49, 0.87], [1.88, 1.48, -1.15, -1.69], [0.82, -1.02, -0.01, 0.84]], np.float32)
CONV = np.array([[-0.44, -0.51, 0.63, -0.30], [-0.15, 0.02, 1.18, 0.68], [0.38, -0.56, -1.38, 0.95],
                 [0.97, -0.14, 0.54, 0.78], [0.83, 0.92, -0.46, 1.51]], np.float32).reshape(5, 1, 2, 2)  # Conv2d(1, 5, 2)

# torch masks after each of 3 rounds, torch layout
L1_FC_02 = [[[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 1], [1, 1, 1, 1, 0]],
            [[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 1], [1, 1, 1, 0, 0]],
            [[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 1], [1, 1, 0, 0, 0]]]
# surviving output channels after each round of ln_structured(amount=0.5, dim=0): 5 -> 3 -> 1 -> 1
# (round(2.5) = 2 and round(0.5) = 0: half to even; "half_up" would remove 3, then empty the layer)
LN_CONV_05 = {1: [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]],
              2: [[0, 1, 1, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]],
              math.inf: [[0, 1, 1, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]],
              -math.inf: [[1, 0, 1, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]}
GLOBAL_FC = [[[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 1], [1, 1, 1, 1, 0]],
             [[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [1, 0, 1, 0, 1], [1, 1, 0, 0, 0]],
             [[1, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1], [1, 1, 0, 0, 0]]]
GLOBAL_FC2 = [[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1]],
              [[1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 0, 1]],
              [[1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 0, 1]]]


def run(pruner, params, rounds=3):
    mask, out = masks.ones_like(params), []
    for _ in range(rounds):
        mask = pruner(params, mask)
        out.append({k: np.asarray(v["kernel"]) for k, v in mask.keep.items()})
    return out


def test_l1_unstructured_iterative():
    got = run(pruning.magnitude(0.2, rounding="half_even"), {"fc": {"kernel": FC.T}})
    for r, want in enumerate(L1_FC_02):
        np.testing.assert_array_equal(got[r]["fc"].T, np.array(want, bool), err_msg=f"round {r + 1}")


@pytest.mark.parametrize("n", [1, 2, -math.inf])  # inf: same masks as 2 here, checked by compare.py
def test_ln_structured_iterative_output_channels(n):
    got = run(pruning.ln_structured(0.5, n=n, rounding="half_even"), {"conv": {"kernel": CONV.transpose(2, 3, 1, 0)}})
    for r, want in enumerate(LN_CONV_05[n]):
        np.testing.assert_array_equal(got[r]["conv"].any(axis=(0, 1, 2)), np.array(want, bool), err_msg=f"round {r + 1}")


def test_global_unstructured_iterative():
    got = run(pruning.magnitude(0.2, "global", rounding="half_even"), {"a": {"kernel": FC.T}, "b": {"kernel": FC2.T}})
    for r in range(3):
        np.testing.assert_array_equal(got[r]["a"].T, np.array(GLOBAL_FC[r], bool), err_msg=f"round {r + 1}")
        np.testing.assert_array_equal(got[r]["b"].T, np.array(GLOBAL_FC2[r], bool), err_msg=f"round {r + 1}")


def test_half_even_counts_match_torch():
    # torch.nn.utils.prune._compute_nparams_toprune(amount, n) = round(amount * n)
    for amount, n, torch_count in [(0.5, 5, 2), (0.5, 1, 0), (0.2, 3, 1), (0.2, 2, 0), (0.2, 1, 0)]:
        assert int(pruning.removal_count(amount, n, "half_even")) == torch_count, (amount, n)


def test_half_even_counts_are_exact_where_torch_rounds_a_float_product():
    # torch rounds the float product: 0.35 * 330 = 115.49999999999999 -> 115, 0.7 * 45 =
    # 31.499999999999996 -> 31. jaxticket counts with the exact fraction (115.5 -> 116, 31.5
    # -> 32, half to even), a documented difference; it arises only for amounts whose exact
    # product can end in .5 and whose float is below the decimal (0.07, 0.35, 0.55, 0.7, ...).
    assert 0.35 * 330 < 115.5 and 0.7 * 45 < 31.5  # the float products torch rounds
    for amount, n, exact_count in [(0.35, 330, 116), (0.7, 45, 32), (0.2, 330, 66), (0.2, 5, 1)]:
        assert int(pruning.removal_count(amount, n, "half_even")) == exact_count, (amount, n)


# The torch side, run once with torch 2.13.0 (CPU) installed; it printed the constants above.
# # torch side of tests/test_pruning_reference.py: expected masks from torch.nn.utils.prune
# import numpy as np, torch, torch.nn as nn, torch.nn.utils.prune as prune
# rng = np.random.default_rng(7)
# def w(shape):
#     while True:
#         x = np.round(rng.standard_normal(shape), 2).astype(np.float32)
#         a = np.abs(x).ravel()
#         if len(np.unique(a)) == a.size and a.min() > 0: return x
# fc = w((4, 5)); conv = w((5, 1, 2, 2)); fc2 = w((3, 4))
# print("torch", torch.__version__)
# print("FC =", fc.tolist()); print("CONV =", conv.tolist()); print("FC2 =", fc2.tolist())
# def mod(x):
#     m = nn.Module(); m.weight = nn.Parameter(torch.tensor(x)); return m
# m = mod(fc); out = []
# for r in range(3):
#     prune.l1_unstructured(m, "weight", amount=0.2); out.append(m.weight_mask.int().tolist())
# print("L1_FC_0.2 =", out)
# for n in (1, 2, float("inf"), float("-inf")):
#     m = mod(conv); out = []
#     for r in range(3):
#         prune.ln_structured(m, "weight", amount=0.5, n=n, dim=0)
#         out.append(m.weight_mask.reshape(5, -1).any(1).int().tolist())
#     print(f"LN_CONV_0.5[{n}] =", out)
# a, b = mod(fc), mod(fc2); outa, outb = [], []
# for r in range(3):
#     prune.global_unstructured([(a, "weight"), (b, "weight")], prune.L1Unstructured, amount=0.2)
#     outa.append(a.weight_mask.int().tolist()); outb.append(b.weight_mask.int().tolist())
# print("GLOBAL_FC =", outa); print("GLOBAL_FC2 =", outb)
# print("counts", {(am, n): prune._compute_nparams_toprune(am, n) for am, n in ((0.35, 330), (0.7, 45), (0.5, 5), (0.5, 1), (0.2, 3))})
