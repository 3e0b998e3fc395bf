"""Sparse training in one run: pruning during training and dynamic sparse training.

The mask lives in the train state and changes inside the compiled loop (before step
``t``, under ``lax.cond`` on an unbatched step counter, so vmapped seeds compute an
update only at the steps that have one); pruned entries stay exactly 0 in params and
optimizer state, and every layer keeps exactly its count.

Methods (:mod:`~jaxticket.sparse.methods`; by name in :data:`METHODS`):

* ``"gmp"``: gradual magnitude pruning (Zhu & Gupta 2017), the cubic sparsity ramp;
* ``"set"``: SET (Mocanu et al. 2018), drop the smallest magnitudes, regrow at random;
* ``"rigl"``: RigL (Evci et al. 2020), regrow where the dense gradient is largest,
  cosine-decayed update fraction, regrown weights and their moments at 0;
* ``"static"``: a fixed random mask, ``"uniform"`` or ``"erk"`` layer densities;
* any pruner at chosen steps: :func:`one_shot`, :func:`every` (e.g. ``pruning.n_m(2, 4)``).

Modules: ``updates`` (drop / grow / prune-to-count on lists of leaves), ``methods``,
``loop`` (the compiled loop), ``run`` (:func:`train_sparse`, results, run directory).

Example:
    >>> import numpy as np, optax, flax.linen as nn
    >>> import jaxticket as jt
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 12)).astype(np.float32); y = (x[:, :3].argmax(1)).astype(np.int32)
    >>> data = jt.data.from_arrays(train=(x[:200], y[:200]), test=(x[200:], y[200:]))
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return nn.Dense(3)(nn.relu(nn.Dense(32)(x)))
    >>> task = jt.Task(MLP(), input_shape=(12,), tx=optax.adam(1e-2))
    >>> result = jt.train_sparse(task, data, "rigl", density=0.25, steps=60, batch_size=20, seeds=2,
    ...                          every=10, log=None)
    >>> result.density.round(4).tolist()          # exactly the ERK counts, every seed
    [0.25, 0.25]
"""

from jaxticket.sparse.methods import (
    DECAYS,
    GMP,
    METHODS,
    RigL,
    SET,
    Scheduled,
    SparseMethod,
    Static,
    dense_grads,
    every,
    get,
    gmp,
    one_shot,
    regrow,
    rigl,
    set_,
    static,
)
from jaxticket.sparse.loop import run_sparse_steps
from jaxticket.sparse.run import SPARSE_STREAM, SparseResult, sparse_keys, train_sparse
from jaxticket.sparse import updates

__all__ = [
    "DECAYS", "GMP", "METHODS", "RigL", "SET", "SPARSE_STREAM", "Scheduled", "SparseMethod", "SparseResult",
    "Static", "dense_grads", "every", "get", "gmp", "method_names", "one_shot", "regrow", "rigl", "run_sparse_steps",
    "set_", "sparse_keys", "static", "train_sparse", "updates",
]


def method_names() -> tuple:
    """The registered sparse-training method names."""
    return METHODS.names()
