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

Submodules (everything public is re-exported here: import from ``jaxticket.analysis``):

* :mod:`jaxticket.analysis.similarity`: mask similarity (Jaccard, overlap, Hamming, the
  matrices over many masks) and :func:`~jaxticket.analysis.similarity.safe_ratio`.
* :mod:`jaxticket.analysis.predictions`: labels and probabilities from logits, agreement,
  error overlap, ensembles.
* :mod:`jaxticket.analysis.structure`: weight trajectories across levels and the
  connectivity of pruned layers.

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

from jaxticket.analysis.similarity import Hamming, hamming, jaccard, overlap, similarity_matrix
from jaxticket.analysis.predictions import (
    Agreement, ErrorOverlap, agreement, class_probabilities, ensemble_accuracy, ensemble_predictions,
    ensemble_table, error_overlap, predicted_labels,
)
from jaxticket.analysis.structure import (
    Connectivity, Movement, connectivity, connectivity_summary, flattened_live, live_units,
    trajectory_movement, weight_trajectories,
)

__all__ = [
    "Agreement", "Connectivity", "ErrorOverlap", "Hamming", "Movement", "agreement", "class_probabilities",
    "connectivity", "connectivity_summary", "flattened_live", "live_units", "ensemble_accuracy",
    "ensemble_predictions", "ensemble_table", "error_overlap", "hamming", "jaccard", "overlap",
    "predicted_labels", "similarity_matrix", "trajectory_movement", "weight_trajectories",
]
