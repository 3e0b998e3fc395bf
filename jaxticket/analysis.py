"""Which ticket? Mask similarity, prediction agreement, ensembles, trajectories, connectivity.

After Paganini & Forde, "Streamlining tensor and network pruning in PyTorch" and "On
iterative neural network pruning, reinitialization, and the similarity of masks" (2020):
different pruning techniques find different subnetworks that make different mistakes.

* Mask similarity (:func:`jaccard`, :func:`overlap`, :func:`hamming`,
  :func:`similarity_matrix`): over the *prunable* entries of :class:`~jaxticket.masks.Mask`
  objects; non-prunable leaves (biases, BN) are ignored.
* Predictions from logits (:func:`predicted_labels`, :func:`class_probabilities`): a last
  axis of size 1 is a sigmoid binary classifier (class 1 iff logit > 0), any other size
  softmax classes; every function below derives labels and probabilities through them.
* Prediction agreement (:func:`agreement`, :func:`error_overlap`) on a test set.
* Ensembles of subnetworks (:func:`ensemble_accuracy`, :func:`ensemble_table`).
* Weight trajectories across pruning levels (:func:`weight_trajectories`,
  :func:`trajectory_movement`).
* Connectivity (:func:`connectivity`, :func:`connectivity_summary`): how unstructured
  pruning empties whole units/channels; with ``upstream=`` (:func:`live_units`,
  :func:`flattened_live`) over the inputs that still carry a signal, so that inputs
  emptied because the unit feeding them lost all its own inputs are not counted twice.

All functions are pure; the ones returning arrays are jit-able unless noted.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxticket import analysis, masks
    >>> params = {"fc1": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    >>> m1 = masks.ones_like(params)                 # kernel prunable, bias not
    >>> k = jnp.array([[True, True, False], [True, False, False]])
    >>> m2 = m1.replace(keep={"fc1": {"kernel": k, "bias": jnp.ones(3, bool)}})
    >>> m3 = m1.replace(keep={"fc1": {"kernel": ~k, "bias": jnp.ones(3, bool)}})
    >>> float(analysis.jaccard(m1, m1))
    1.0
    >>> analysis.similarity_matrix([m1, m2, m3]).shape
    (3, 3)
    >>> # logits [3 models, 4 examples, 2 classes]; each model alone is 75% accurate
    >>> logits = jnp.array([[[3., 0.], [0., 1.], [1., 0.], [1., 0.]],
    ...                     [[1., 0.], [1., 0.], [0., 1.], [1., 0.]],
    ...                     [[0., 1.], [0., 1.], [0., 3.], [1., 0.]]])
    >>> labels = jnp.array([0, 1, 1, 0])
    >>> float(analysis.ensemble_accuracy(logits, labels, members=[0, 2], method="vote"))
    1.0
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket import masks as masks_lib
from jaxticket.masks import Mask

PyTree = Any

__all__ = [
    "Agreement",
    "Connectivity",
    "ErrorOverlap",
    "Hamming",
    "Movement",
    "agreement",
    "class_probabilities",
    "connectivity",
    "connectivity_summary",
    "flattened_live",
    "live_units",
    "ensemble_accuracy",
    "ensemble_predictions",
    "ensemble_table",
    "error_overlap",
    "hamming",
    "jaccard",
    "overlap",
    "predicted_labels",
    "similarity_matrix",
    "trajectory_movement",
    "weight_trajectories",
]


# ----------------------------------------------------------------------------- mask similarity


def _check_fit(a: Mask, b: Mask, fn: str) -> None:
    """Masks must have the same tree, leaf shapes and prunable flags."""
    for name, m in (("first", a), ("second", b)):
        if not isinstance(m, Mask):
            raise TypeError(
                f"{fn}: the {name} argument is a {type(m).__name__}, not a jaxticket Mask; "
                "wrap bool trees with jaxticket.masks.from_tree."
            )
    try:
        masks_lib.validate(a.keep, b)
    except ValueError as e:
        raise ValueError(f"{fn}: the two masks do not fit each other: {e}") from None
    if a.prunable != b.prunable:
        diff = [p for p, fa, fb in zip(a.paths(), a.prunable, b.prunable) if fa != fb]
        raise ValueError(
            f"{fn}: the two masks disagree on which leaves are prunable at {diff[:5]}; "
            "build both with the same masks.ones_like(params, prunable=...)."
        )


class _Counts(NamedTuple):
    inter: jax.Array  # |a & b|
    na: jax.Array  # |a|
    nb: jax.Array  # |b|
    total: int  # entries


def _leaf_counts(a: Mask, b: Mask, fn: str) -> dict[str, _Counts]:
    _check_fit(a, b, fn)
    out = {}
    for path, ka, kb, flag in zip(a.paths(), a.leaves(), b.leaves(), a.prunable):
        if flag:
            ka, kb = jnp.asarray(ka, bool), jnp.asarray(kb, bool)
            out[path] = _Counts(
                jnp.sum(ka & kb, dtype=jnp.int32),
                jnp.sum(ka, dtype=jnp.int32),
                jnp.sum(kb, dtype=jnp.int32),
                int(np.prod(np.shape(ka))),
            )
    return out


def _total_counts(per_leaf: dict[str, _Counts]) -> _Counts:
    zero = jnp.zeros((), jnp.int32)
    return _Counts(
        sum((c.inter for c in per_leaf.values()), zero),
        sum((c.na for c in per_leaf.values()), zero),
        sum((c.nb for c in per_leaf.values()), zero),
        sum(c.total for c in per_leaf.values()),
    )


def _safe_ratio(num, den, empty_value):
    num, den = jnp.asarray(num, jnp.float32), jnp.asarray(den, jnp.float32)
    return jnp.where(den == 0, jnp.float32(empty_value), num / jnp.where(den == 0, 1.0, den))


def _jaccard(c: _Counts):
    return _safe_ratio(c.inter, c.na + c.nb - c.inter, 1.0)


def _overlap(c: _Counts):
    smaller = jnp.minimum(c.na, c.nb)
    both_empty = (c.na == 0) & (c.nb == 0)
    return jnp.where(both_empty, jnp.float32(1.0), _safe_ratio(c.inter, smaller, 0.0))


class Hamming(NamedTuple):
    """Entries where two masks differ: ``count`` (int) and ``fraction`` of prunable entries."""

    count: jax.Array
    fraction: jax.Array


def _hamming(c: _Counts) -> Hamming:
    count = c.na + c.nb - 2 * c.inter
    return Hamming(count, _safe_ratio(count, c.total, 0.0))


def _reduce(a, b, fn_name, metric, per_layer):
    per_leaf = _leaf_counts(a, b, fn_name)
    if per_layer:
        return {path: metric(c) for path, c in per_leaf.items()}
    return metric(_total_counts(per_leaf))


def jaccard(mask_a: Mask, mask_b: Mask, *, per_layer: bool = False):
    """Jaccard index ``|a & b| / |a | b|`` of the kept entries, over prunable leaves.

    1.0 for identical masks and for two empty masks, 0.0 for disjoint ones. Symmetric.

    Args:
      mask_a, mask_b: masks of the same params (same tree, shapes and prunable flags).
      per_layer: ``False``: one float32 scalar over all prunable entries. ``True``: a dict
        ``path -> scalar`` for each prunable leaf.

    Example: ``jaccard(m, m) == 1.0``; ``jaccard(m, m, per_layer=True)["fc1/kernel"]``.
    """
    return _reduce(mask_a, mask_b, "jaccard", _jaccard, per_layer)


def overlap(mask_a: Mask, mask_b: Mask, *, per_layer: bool = False):
    """Overlap coefficient ``|a & b| / min(|a|, |b|)`` (1.0 when one contains the other).

    Conventions: two empty masks give 1.0; exactly one empty mask gives 0.0 (as Jaccard).
    ``per_layer`` as in :func:`jaccard`.

    Example: ``overlap(m, pruned_further(m)) == 1.0`` (nested masks).
    """
    return _reduce(mask_a, mask_b, "overlap", _overlap, per_layer)


def hamming(mask_a: Mask, mask_b: Mask, *, per_layer: bool = False):
    """Hamming distance: prunable entries kept by exactly one of the masks.

    Returns a :class:`Hamming` ``(count, fraction)`` (fraction of prunable entries), or with
    ``per_layer=True`` a dict ``path -> Hamming``.

    Example: ``hamming(m, m).count == 0``.
    """
    return _reduce(mask_a, mask_b, "hamming", _hamming, per_layer)


_METRICS = ("jaccard", "overlap", "hamming", "hamming_count")


@jax.jit
def _gram(leaves):
    """Sum over leaves of ``X @ X.T`` (int32 counts) for leaves ``[n, ...]``; and sizes."""
    n = leaves[0].shape[0]
    inter = jnp.zeros((n, n), jnp.int32)
    for k in leaves:
        x = k.reshape(n, -1).astype(jnp.int32)
        inter = inter + jax.lax.dot_general(x, x, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    return inter


def similarity_matrix(masks_list: Sequence[Mask] | Mask, metric: str = "jaccard") -> jax.Array:
    """``[n, n]`` pairwise similarity of n masks.

    Args:
      masks_list: a sequence of masks that fit each other, or one Mask whose leaves carry a
        leading ``[n]`` axis (e.g. vmapped seeds).
      metric: ``"jaccard"``, ``"overlap"``, ``"hamming"`` (fraction of prunable entries that
        differ) or ``"hamming_count"`` (int32 counts).

    Returns:
      ``[n, n]`` symmetric matrix (float32; int32 for ``"hamming_count"``) with the same
      values as the pairwise functions; intersections are counted exactly in int32 with one
      matrix product per leaf.

    Example: ``similarity_matrix([m1, m2, m3])`` -> ones on the diagonal.
    """
    if metric not in _METRICS:
        raise ValueError(f"similarity_matrix: unknown metric {metric!r}; choose one of {list(_METRICS)}.")
    if isinstance(masks_list, Mask):
        stacked = [jnp.asarray(k, bool) for k, f in zip(masks_list.leaves(), masks_list.prunable) if f]
        if stacked and any(k.ndim < 1 or k.shape[0] != stacked[0].shape[0] for k in stacked):
            raise ValueError("similarity_matrix: a stacked Mask needs the same leading [n] axis on every leaf.")
        n = stacked[0].shape[0] if stacked else 0
    else:
        masks_list = list(masks_list)
        if not masks_list:
            raise ValueError("similarity_matrix: no masks given.")
        for i, m in enumerate(masks_list):
            try:
                _check_fit(masks_list[0], m, "similarity_matrix")
            except (TypeError, ValueError) as e:
                raise type(e)(f"mask {i}: {e}") from None
        first = masks_list[0]
        n = len(masks_list)
        stacked = [
            jnp.stack([jnp.asarray(m.leaves()[i], bool) for m in masks_list])
            for i, f in enumerate(first.prunable)
            if f
        ]
    if not stacked:
        # No prunable entries: every pair is identical (empty) masks.
        ones = jnp.ones((n, n), jnp.float32)
        return {"hamming": 0 * ones, "hamming_count": jnp.zeros((n, n), jnp.int32)}.get(metric, ones)
    total = sum(int(np.prod(k.shape[1:])) for k in stacked)
    inter = _gram(stacked)
    sizes = jnp.diagonal(inter)
    c = _Counts(inter, sizes[:, None], sizes[None, :], total)
    if metric == "jaccard":
        return _jaccard(c)
    if metric == "overlap":
        return _overlap(c)
    h = _hamming(c)
    return h.count if metric == "hamming_count" else h.fraction


# ----------------------------------------------------------------------------- predictions


def predicted_labels(logits) -> jax.Array:
    """Predicted classes (int32) from logits ``[..., n_classes]`` -> ``[...]``.

    A last axis of size 1 is a single-logit (sigmoid) binary classifier: class 1 iff
    ``logit > 0``. Any other size: the argmax over the classes (softmax). Jit-able.

    Example:
        >>> predicted_labels(jnp.array([[0.2, 1.0], [3.0, -1.0]])).tolist()   # 2 classes
        [1, 0]
        >>> predicted_labels(jnp.array([[0.7], [-0.1], [0.0]])).tolist()      # sigmoid logits
        [1, 0, 0]
    """
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"predicted_labels: logits need a last axis of classes (1 = sigmoid), got {logits.shape}.")
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def class_probabilities(logits) -> jax.Array:
    """Class probabilities (float32) from logits ``[..., n_classes]``.

    Softmax over the last axis; a last axis of size 1 (a sigmoid binary classifier)
    gives two classes ``[..., 2] = [1 - sigmoid(logit), sigmoid(logit)]``, so that
    ``argmax`` agrees with :func:`predicted_labels` and averaging them over models
    averages the sigmoid probabilities. Jit-able.

    Example:
        >>> class_probabilities(jnp.array([[0.0], [jnp.log(3.0)]])).round(4).tolist()
        [[0.5, 0.5], [0.25, 0.75]]
    """
    logits = jnp.asarray(logits).astype(jnp.float32)
    if logits.ndim >= 1 and logits.shape[-1] == 1:
        p = jax.nn.sigmoid(logits)
        return jnp.concatenate([1.0 - p, p], axis=-1)
    return jax.nn.softmax(logits, axis=-1)


def _as_labels(labels, shape: tuple, fn: str) -> jax.Array:
    """True labels of shape ``shape`` (``[n_examples]``); binary targets ``[n, 1]`` are
    taken as ``[n]`` (``labels.float == prediction`` compares 0./1. with 0/1)."""
    labels = jnp.asarray(labels)
    if labels.shape == (*shape, 1):
        labels = labels[..., 0]
    if labels.shape != tuple(shape):
        raise ValueError(f"{fn}: labels shape {labels.shape} != [n_examples] = {tuple(shape)}.")
    return labels


def _labels_from(predictions, fn: str) -> jax.Array:
    p = jnp.asarray(predictions)
    if p.ndim == 3:
        p = predicted_labels(p)
    if p.ndim != 2:
        raise ValueError(
            f"{fn}: expected predicted labels [n_models, n_examples] or logits "
            f"[n_models, n_examples, n_classes] (n_classes 1: sigmoid), got shape {p.shape}."
        )
    return p


class Agreement(NamedTuple):
    """``counts[i, j]``: examples where models i and j predict the same class (int32);
    ``fraction``: the same divided by ``n_examples``. Both ``[n_models, n_models]``."""

    counts: jax.Array
    fraction: jax.Array


def agreement(predictions) -> Agreement:
    """Pairwise prediction agreement of n models on the same examples.

    Args:
      predictions: labels ``[n_models, n_examples]`` or logits
        ``[n_models, n_examples, n_classes]`` (labels by :func:`predicted_labels`: argmax,
        or ``logit > 0`` for a single sigmoid logit).

    Returns:
      :class:`Agreement`: symmetric matrices with ``n_examples`` (fraction 1) on the
      diagonal. Jit-able.

    Example:
        >>> agreement(jnp.array([[0, 1, 2], [0, 1, 1]])).counts.tolist()
        [[3, 2], [2, 3]]
        >>> agreement(jnp.array([[[0.5], [-1.], [2.]], [[0.1], [1.], [2.]]])).counts.tolist()  # sigmoid
        [[3, 2], [2, 3]]
    """
    p = _labels_from(predictions, "agreement")
    counts = jnp.sum(p[:, None, :] == p[None, :, :], axis=-1, dtype=jnp.int32)
    return Agreement(counts, counts.astype(jnp.float32) / max(p.shape[1], 1))


class ErrorOverlap(NamedTuple):
    """``both_wrong[i, j]``: examples misclassified by both i and j (diagonal: i's error
    count); ``fraction``: divided by ``n_examples``; ``jaccard``: ``both / either`` wrong
    (1.0 when neither makes a mistake). All ``[n_models, n_models]``."""

    both_wrong: jax.Array
    fraction: jax.Array
    jaccard: jax.Array


def error_overlap(predictions, labels) -> ErrorOverlap:
    """Do two models make the *same* mistakes? (labels or logits as in :func:`agreement`).

    Example: ``error_overlap(logits, y).jaccard`` -> ``[n, n]``. Jit-able.
    """
    p = _labels_from(predictions, "error_overlap")
    labels = _as_labels(labels, p.shape[1:], "error_overlap")
    wrong = (p != labels[None]).astype(jnp.int32)
    both = wrong @ wrong.T
    n_wrong = jnp.diagonal(both)
    either = n_wrong[:, None] + n_wrong[None, :] - both
    return ErrorOverlap(both, both.astype(jnp.float32) / max(p.shape[1], 1), _safe_ratio(both, either, 1.0))


# ----------------------------------------------------------------------------- ensembles


def _member_indices(members, n_models: int, names: Sequence[str] | None, fn: str) -> np.ndarray:
    if members is None:
        return np.arange(n_models)
    idx = []
    for m in members:
        if isinstance(m, str):
            if names is None:
                raise ValueError(f"{fn}: member {m!r} is a name but no names= list was given.")
            if m not in names:
                raise ValueError(f"{fn}: unknown member {m!r}; names are {list(names)}.")
            idx.append(list(names).index(m))
        else:
            i = int(m)
            if not -n_models <= i < n_models:
                raise ValueError(f"{fn}: member index {i} out of range for {n_models} models.")
            idx.append(i % n_models)
    if not idx:
        raise ValueError(f"{fn}: empty member list.")
    return np.asarray(idx)


@jax.jit
def _mean_softmax_predict(logits):
    probs = jnp.mean(class_probabilities(logits), axis=0)
    return jnp.argmax(probs, axis=-1)


@jax.jit
def _vote_predict(logits):
    probs = jnp.mean(class_probabilities(logits), axis=0)  # [E, K]; K = 2 for a sigmoid logit
    votes = jnp.sum(jax.nn.one_hot(predicted_labels(logits), probs.shape[-1], dtype=jnp.int32), axis=0)
    tied = votes == jnp.max(votes, axis=-1, keepdims=True)
    return jnp.argmax(jnp.where(tied, probs, -jnp.inf), axis=-1)


def ensemble_predictions(logits, members=None, method: str = "mean_softmax", *, names=None) -> jax.Array:
    """Predicted labels ``[n_examples]`` of an ensemble of models.

    Args:
      logits: ``[n_models, n_examples, n_classes]``; ``n_classes == 1`` is a sigmoid
        binary classifier (its probabilities are ``sigmoid(logit)``, see
        :func:`class_probabilities`).
      members: ``None`` (all), or indices / names (with ``names=``) of the members.
      method: ``"mean_softmax"``: argmax of the mean of the members' softmax (or
        sigmoid) probabilities. ``"vote"``: majority vote of the members' argmax; **ties are broken
        by the summed (mean) softmax probability among the tied classes**, and, if still
        tied, by the lowest class index.

    Example: ``ensemble_predictions(logits, [0, 1], "vote")``.
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"ensemble: logits must be [n_models, n_examples, n_classes], got {logits.shape}.")
    idx = _member_indices(members, logits.shape[0], names, "ensemble")
    sub = logits[jnp.asarray(idx)]
    if method == "mean_softmax":
        return _mean_softmax_predict(sub)
    if method == "vote":
        return _vote_predict(sub)
    raise ValueError(f"ensemble: method must be 'mean_softmax' or 'vote', got {method!r}.")


def ensemble_accuracy(
    logits, labels, members=None, method: str = "mean_softmax", *, names: Sequence[str] | None = None
) -> jax.Array:
    """Accuracy (float32 scalar) of an ensemble; see :func:`ensemble_predictions`.

    Example:
        >>> logits = jnp.array([[[3., 0.], [0., 1.], [1., 0.], [1., 0.]],
        ...                     [[1., 0.], [1., 0.], [0., 1.], [1., 0.]],
        ...                     [[0., 1.], [0., 1.], [0., 3.], [1., 0.]]])
        >>> y = jnp.array([0, 1, 1, 0])
        >>> names = ["l1", "l2", "random"]
        >>> float(ensemble_accuracy(logits, y))                               # all members
        1.0
        >>> float(ensemble_accuracy(logits, y, ["l1", "random"], "vote", names=names))
        1.0
        >>> float(ensemble_accuracy(logits, y, ["l2"], names=names))          # one member
        0.75
    """
    pred = ensemble_predictions(logits, members, method, names=names)
    labels = _as_labels(labels, pred.shape, "ensemble_accuracy")
    return jnp.mean((pred == labels).astype(jnp.float32))


def ensemble_table(
    logits, labels, names: Sequence[str], subsets: Mapping[str, Sequence[str]]
) -> list[dict]:
    """One row per named subset: ensemble accuracies and the best single member.

    Args:
      logits: ``[n_models, n_examples, n_classes]`` (1 class: sigmoid); labels
        ``[n_examples]`` (or ``[n_examples, 1]`` binary targets).
      names: one name per model.
      subsets: ``{subset_name: [member names]}``.

    Returns:
      Rows (host floats) ``{"subset", "members", "mean_softmax", "vote", "best_single",
      "best_member"}``, in ``subsets`` order.

    Example:
        >>> logits = jnp.array([[[3., 0.], [0., 1.], [1., 0.], [1., 0.]],
        ...                     [[1., 0.], [1., 0.], [0., 1.], [1., 0.]],
        ...                     [[0., 1.], [0., 1.], [0., 3.], [1., 0.]]])
        >>> y = jnp.array([0, 1, 1, 0])
        >>> rows = ensemble_table(logits, y, ["l1", "l2", "rand"], {"all": ["l1", "l2", "rand"]})
        >>> rows[0]["members"], rows[0]["vote"], rows[0]["best_single"], rows[0]["best_member"]
        (['l1', 'l2', 'rand'], 1.0, 0.75, 'l1')
    """
    logits = jnp.asarray(logits)
    names = list(names)
    if len(names) != logits.shape[0]:
        raise ValueError(f"ensemble_table: {len(names)} names for {logits.shape[0]} models.")
    labels = _as_labels(labels, logits.shape[1:2], "ensemble_table")
    single = np.asarray(jnp.mean((predicted_labels(logits) == labels[None]).astype(jnp.float32), axis=-1))
    rows = []
    for subset, members in subsets.items():
        idx = _member_indices(members, len(names), names, f"ensemble_table[{subset!r}]")
        best = int(idx[np.argmax(single[idx])])
        rows.append(
            {
                "subset": subset,
                "members": [names[i] for i in idx],
                "mean_softmax": float(ensemble_accuracy(logits, labels, idx, "mean_softmax")),
                "vote": float(ensemble_accuracy(logits, labels, idx, "vote")),
                "best_single": float(single[best]),
                "best_member": names[best],
            }
        )
    return rows


# ----------------------------------------------------------------------------- trajectories


def _leaf_at(tree: PyTree, path: str, fn: str):
    found = {masks_lib.path_string(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    if path not in found:
        raise KeyError(f"{fn}: no leaf '{path}'; leaves are {list(found)}.")
    return found[path]


def _per_level(items, fn: str, what: str) -> list:
    if isinstance(items, (list, tuple)):
        return list(items)
    raise TypeError(f"{fn}: {what} must be a list (one entry per level), got {type(items).__name__}.")


def weight_trajectories(params_per_level: Sequence[PyTree], masks_per_level: Sequence[Mask], path: str) -> np.ndarray:
    """Values of one layer's weights that survive at the LAST level, across all levels.

    Args:
      params_per_level: list of params pytrees, one per pruning level (e.g. the trained
        weights at the end of each level).
      masks_per_level: list of masks, one per level (same length); the surviving set is
        ``masks_per_level[-1]``. IMP masks are nested, so these weights survived every
        earlier level too.
      path: the leaf's path string, e.g. ``"fc1/kernel"``.

    Returns:
      ``[n_levels, n_surviving]`` NumPy array (entries in row-major order of the leaf).
      Host function (the number of survivors is data dependent).

    Example:
        >>> from jaxticket import masks
        >>> p0 = {"fc1": {"kernel": jnp.array([[1., 2.], [3., 4.]])}}
        >>> p1, p2 = jax.tree.map(lambda w: 2 * w, p0), jax.tree.map(lambda w: 3 * w, p0)
        >>> m0 = masks.ones_like(p0)
        >>> m1 = m0.replace(keep={"fc1": {"kernel": jnp.array([[False, True], [True, True]])}})
        >>> m2 = m0.replace(keep={"fc1": {"kernel": jnp.array([[False, True], [False, True]])}})
        >>> traj = weight_trajectories([p0, p1, p2], [m0, m1, m2], "fc1/kernel")   # [3, S]
        >>> traj.shape
        (3, 2)
        >>> traj.tolist()
        [[2.0, 4.0], [4.0, 8.0], [6.0, 12.0]]
    """
    params_list = _per_level(params_per_level, "weight_trajectories", "params_per_level")
    masks_list = _per_level(masks_per_level, "weight_trajectories", "masks_per_level")
    if len(params_list) != len(masks_list) or not params_list:
        raise ValueError(
            f"weight_trajectories: {len(params_list)} params and {len(masks_list)} masks; need one "
            "of each per level (at least one level)."
        )
    for level, (p, m) in enumerate(zip(params_list, masks_list)):
        try:
            masks_lib.validate(p, m)
        except (TypeError, ValueError) as e:
            raise type(e)(f"weight_trajectories: level {level}: {e}") from None
    keep = np.asarray(_leaf_at(masks_list[-1].keep, path, "weight_trajectories"), dtype=bool)
    return np.stack([np.asarray(_leaf_at(p, path, "weight_trajectories"))[keep] for p in params_list])


class Movement(NamedTuple):
    """Per level transition ``l -> l+1`` (``[n_levels - 1]`` each):

    * ``mean_abs_change``: ``mean |w_{l+1} - w_l|``;
    * ``relative_change``: ``sum |w_{l+1} - w_l| / sum |w_l|`` (= mean abs change over mean
      abs weight; NaN when there are no surviving weights or they are all zero).
    """

    mean_abs_change: jax.Array
    relative_change: jax.Array


def trajectory_movement(traj) -> Movement:
    """How much the surviving weights move from level to level (see :class:`Movement`).

    Args:
      traj: ``[n_levels, n_surviving]`` from :func:`weight_trajectories`.

    Example: ``trajectory_movement(jnp.array([[1., 2.], [2., 2.]]))`` ->
    ``mean_abs_change [0.5]``, ``relative_change [1/3]``. Jit-able.
    """
    t = jnp.asarray(traj)
    if t.ndim != 2:
        raise ValueError(f"trajectory_movement: expected [n_levels, n_surviving], got shape {t.shape}.")
    t = t.astype(jnp.promote_types(t.dtype, jnp.float32))
    delta = jnp.abs(jnp.diff(t, axis=0))
    mean_abs = jnp.mean(delta, axis=1)
    rel = jnp.sum(delta, axis=1) / jnp.sum(jnp.abs(t[:-1]), axis=1)
    return Movement(mean_abs, rel)


# ----------------------------------------------------------------------------- connectivity


class Connectivity(NamedTuple):
    """Surviving connections of one kernel ``(*spatial, in, out)``.

    Attributes:
      per_output: ``[out]`` surviving input connections of each output unit/channel (for a
        conv: summed over the kernel window and input channels).
      per_input: ``[in]`` surviving outgoing connections of each input unit/channel.
      per_pair: ``[in, out]`` surviving weights of each (input, output) channel pair (the
        ``h x w`` kernel slice for convs; the 0/1 mask itself for Dense).
      empty_inputs: fraction of input units/channels with no surviving outgoing weights.
      empty_outputs: fraction of output units/channels with no surviving inputs.
      empty_pairs: fraction of (input, output) pairs fully pruned (whole conv kernel
        slices; for Dense simply the pruned fraction).
    """

    per_output: jax.Array
    per_input: jax.Array
    per_pair: jax.Array
    empty_inputs: jax.Array
    empty_outputs: jax.Array
    empty_pairs: jax.Array


def _connectivity(keep, upstream=None) -> Connectivity:
    keep = jnp.asarray(keep, bool)
    if upstream is None:
        live = jnp.ones(keep.shape[-2], bool)
    else:
        live = jnp.asarray(upstream, bool)
        if live.shape != keep.shape[-2:-1]:
            raise ValueError(f"connectivity: upstream has shape {live.shape}; the kernel {keep.shape} has "
                             f"{keep.shape[-2]} inputs: pass one bool per input (live_units of the layer before)")
        keep = keep & live[:, None]  # weights from dead inputs carry nothing
    per_pair = jnp.sum(keep, axis=tuple(range(keep.ndim - 2)), dtype=jnp.int32)  # [in, out]
    per_output = jnp.sum(per_pair, axis=0)
    per_input = jnp.sum(per_pair, axis=1)
    n_live = jnp.sum(live)
    some = n_live > 0
    empty_in = jnp.sum((per_input == 0) & live) / jnp.where(some, n_live, 1)
    empty_pair = jnp.sum((per_pair == 0) & live[:, None]) / jnp.where(some, n_live * per_pair.shape[1], 1)
    return Connectivity(
        per_output,
        per_input,
        per_pair,
        jnp.where(some, empty_in, jnp.nan).astype(jnp.float32),
        jnp.mean((per_output == 0).astype(jnp.float32)),
        jnp.where(some, empty_pair, jnp.nan).astype(jnp.float32),
    )


def connectivity(mask: Mask | PyTree, path: str, upstream=None) -> Connectivity:
    """Connectivity of the kernel at ``path`` (Dense ``(in, out)``, Conv ``(h, w, in, out)``).

    Shows when unstructured pruning (with rewinding) ends up structured-like: whole input
    channels/units without outgoing weights, output units without inputs.

    Args:
      mask: a Mask (or a params-shaped tree of bools).
      path: e.g. ``"conv1/kernel"``.
      upstream: optional bool ``[in]``: the inputs that carry a signal (e.g.
        :func:`live_units` of the layer that feeds this one). A unit whose own inputs are
        all pruned sends a constant (from its bias) whatever the input, so the weights
        leaving it are not counted: ``per_*`` count the weights from live inputs only,
        ``empty_inputs`` is the fraction of the *live* inputs left without outgoing
        weights, ``empty_pairs`` that of the (live input, output) pairs (both NaN when no
        input is live), ``empty_outputs`` that of the outputs without a weight from a live
        input. ``None``: every input counts (the raw figures).

    Example:
        >>> from jaxticket import masks
        >>> mask = masks.ones_like({"fc1": {"kernel": jnp.ones((2, 3))}})
        >>> mask = mask.replace(keep={"fc1": {"kernel": jnp.array([[True, True, False],
        ...                                                         [True, False, False]])}})
        >>> c = connectivity(mask, "fc1/kernel")
        >>> c.per_output.tolist()                  # [out] inputs left per hidden unit
        [2, 1, 0]
        >>> round(float(c.empty_outputs), 4)       # fraction of dead hidden units
        0.3333
        >>> live = connectivity(mask, "fc1/kernel", upstream=jnp.array([True, False]))
        >>> live.per_output.tolist(), float(live.empty_inputs)   # input 1 is fed by a dead unit
        ([1, 1, 0], 0.0)
    """
    tree = mask.keep if isinstance(mask, Mask) else mask
    keep = _leaf_at(tree, path, "connectivity")
    if np.ndim(keep) < 2:
        raise ValueError(
            f"connectivity: '{path}' has shape {np.shape(keep)}; need a kernel (in, out) or (h, w, in, out)."
        )
    return _connectivity(keep, upstream)


def live_units(mask: Mask | PyTree, path: str, upstream=None) -> jax.Array:
    """bool ``[out]``: the output units/channels of the kernel at ``path`` that keep at
    least one weight from a live input (``upstream`` as in :func:`connectivity`; ``None``:
    every input is live). The others compute a constant (from their bias) whatever the input.

    Chained through a network, ``live_units`` of each layer is the ``upstream`` of the
    next (through :func:`flattened_live` where a conv feeds a dense layer).

    Example:
        >>> keep = {"a": {"kernel": jnp.array([[True, False, False], [False, False, False]])},
        ...         "b": {"kernel": jnp.array([[True], [False], [True]])}}
        >>> live_a = live_units(keep, "a/kernel")
        >>> live_a.tolist()
        [True, False, False]
        >>> live_units(keep, "b/kernel", upstream=live_a).tolist()   # b keeps a weight from a's unit 0
        [True]
    """
    return connectivity(mask, path, upstream).per_output > 0


def flattened_live(live_channels, spatial: int) -> jax.Array:
    """bool ``[spatial * C]``: the live inputs of a dense layer fed by a flattened NHWC
    feature map of ``C`` channels at ``spatial`` positions (channel fastest, as
    ``jaxticket.models.layers.flatten`` orders it): position ``p``, channel ``c`` is input
    ``p * C + c``.

    Example:
        >>> flattened_live(jnp.array([True, False]), 3).tolist()
        [True, False, True, False, True, False]
    """
    return jnp.tile(jnp.asarray(live_channels, bool), spatial)


def connectivity_summary(mask: Mask) -> dict[str, dict]:
    """:func:`connectivity` for every prunable kernel (``ndim >= 2``), as host floats.

    Returns:
      ``{path: {"shape", "density", "empty_inputs", "empty_outputs", "empty_pairs"}}``.

    Example:
        >>> from jaxticket import masks
        >>> mask = masks.ones_like({"fc1": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}})
        >>> keep = {"fc1": {"kernel": jnp.array([[True, True, False], [True, False, False]]),
        ...                 "bias": jnp.ones(3, bool)}}
        >>> for path, row in connectivity_summary(mask.replace(keep=keep)).items():
        ...     print(path, row["shape"], row["density"], round(row["empty_outputs"], 4))
        fc1/kernel (2, 3) 0.5 0.3333
    """
    if not isinstance(mask, Mask):
        raise TypeError(f"connectivity_summary: expected a jaxticket Mask, got {type(mask).__name__}.")
    out = {}
    for path, keep, flag in zip(mask.paths(), mask.leaves(), mask.prunable):
        if not flag or np.ndim(keep) < 2:
            continue
        c = _connectivity(keep)
        out[path] = {
            "shape": tuple(np.shape(keep)),
            "density": float(jnp.mean(jnp.asarray(keep, jnp.float32))),
            "empty_inputs": float(c.empty_inputs),
            "empty_outputs": float(c.empty_outputs),
            "empty_pairs": float(c.empty_pairs),
        }
    return out
