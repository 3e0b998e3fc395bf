"""Predictions: labels and probabilities from logits, agreement, error overlap, ensembles."""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxticket.analysis.similarity import safe_ratio

PyTree = Any

__all__ = ["Agreement", "ErrorOverlap", "agreement", "class_probabilities", "ensemble_accuracy", "ensemble_predictions", "ensemble_table", "error_overlap", "predicted_labels"]


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
    return ErrorOverlap(both, both.astype(jnp.float32) / max(p.shape[1], 1), safe_ratio(both, either, 1.0))


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
