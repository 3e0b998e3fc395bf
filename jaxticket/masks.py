"""Mask pytrees: create, apply, count, summarise, validate.

A mask says, for every entry of every parameter, whether it survives. In jaxticket a
mask is a :class:`Mask`, a small pytree with two parts:

* ``mask.keep``: a pytree with exactly the tree structure and leaf shapes of the params,
  with ``bool`` leaves (``True`` = the weight survives);
* ``mask.prunable``: static metadata, one ``bool`` per leaf (in ``jax.tree.leaves``
  order), saying which leaves may ever be pruned. Leaves that are never pruned (biases,
  normalisation scales and offsets by default) stay all-True, and only prunable leaves
  count in :func:`density` / :func:`sparsity`, as in the papers' "percent of weights
  remaining".

``jax.tree.leaves(mask)`` are the ``keep`` leaves in the params' leaf order, and
``prunable`` travels as static data, so a mask passes through ``jax.jit``,
``jax.vmap`` (a leading seeds axis on every leaf) and ``jax.lax.scan`` unchanged.

Paths. Functions that select leaves by name use the leaf's *path string*: the keys from
the root to the leaf joined by ``/``. Dict keys are written as they are, sequence indices
as integers, dataclass attributes by name. For Flax Linen params
(``variables["params"]``) a Dense kernel is ``"Dense_2/kernel"`` or, for named
submodules, ``"block1/conv1/kernel"``. If you pass the full ``variables`` dict instead,
paths start with ``"params/"``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxticket import masks
    >>> params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
    >>> mask = masks.ones_like(params)          # kernels prunable, biases not
    >>> float(masks.density(mask))
    1.0
    >>> pruned = masks.apply(params, mask)      # params with pruned entries exactly 0
    >>> print(masks.summary(mask))  # doctest: +NORMALIZE_WHITESPACE
    leaf              shape  kept  total  density  prunable
    ----------------  -----  ----  -----  -------  --------
    dense/bias        3         3      3   1.0000  no
    dense/kernel      4x3      12     12   1.0000  yes
    ----------------  -----  ----  -----  -------  --------
    total (prunable)           12     12   1.0000
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
PrunableSpec = Union[None, str, "re.Pattern[str]", Callable[[str, Any], bool]]

__all__ = [
    "Mask",
    "MaskSummary",
    "apply",
    "count",
    "density",
    "emptied_leaves",
    "from_tree",
    "host_density",
    "leaf_paths",
    "ones_like",
    "path_predicate",
    "path_string",
    "sparsity",
    "summary",
    "validate",
]


# ----------------------------------------------------------------------------- paths


def _key_string(key) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return str(key.name)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_string(path: Sequence[Any]) -> str:
    """Spells a ``jax.tree_util`` key path as ``"a/b/c"`` (dict keys, indices, attributes).

    Example: ``path_string((DictKey("Dense_0"), DictKey("kernel"))) == "Dense_0/kernel"``.
    """
    return "/".join(_key_string(k) for k in path)


def leaf_paths(tree: PyTree) -> list[str]:
    """Path strings of ``tree``'s leaves, in ``jax.tree.leaves`` order.

    Example: ``leaf_paths({"a": {"kernel": x, "bias": b}}) == ["a/bias", "a/kernel"]``.
    """
    return [path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


# ----------------------------------------------------------------------------- the Mask


@jax.tree_util.register_pytree_with_keys_class
class Mask:
    """A mask: ``keep`` (params-shaped tree of bool arrays) and ``prunable`` (static flags).

    Attributes:
      keep: pytree with the params' structure and leaf shapes, bool leaves. With a
        leading seeds axis each leaf is ``[S, *leaf_shape]``.
      prunable: tuple of bools, one per leaf in ``jax.tree.leaves(keep)`` order; static
        (part of the tree structure, so it is fixed under ``jit``).
      ranks: tuple of ints, the number of axes of each params leaf (static). A mask whose
        leaves have more axes than that carries leading seed axes (:attr:`batch_dims`):
        stacking masks keeps ``ranks``, and under ``jax.vmap`` the leaves lose the axis
        again, so the two are told apart without guessing from shapes.

    Build one with :func:`ones_like` (or :func:`from_tree`), never by hand.

    Example:
        >>> params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
        >>> mask = ones_like(params)
        >>> mask.paths(), mask.prunable, mask.batch_dims
        (['dense/bias', 'dense/kernel'], (False, True), 0)
        >>> mask = mask.replace(keep={"dense": {"kernel": jnp.eye(4, 3, dtype=bool), "bias": jnp.ones(3, bool)}})
        >>> float(apply(params, mask)["dense"]["kernel"].sum())   # pruned entries are exactly 0
        3.0
    """

    __slots__ = ("keep", "prunable", "ranks")

    def __init__(self, keep: PyTree, prunable: Sequence[bool], ranks: Optional[Sequence[int]] = None):
        prunable = tuple(bool(p) for p in prunable)
        leaves = jax.tree.leaves(keep)
        if len(prunable) != len(leaves):
            raise ValueError(
                f"Mask: `prunable` has {len(prunable)} flags but `keep` has {len(leaves)} "
                "leaves; build masks with jaxticket.masks.ones_like(params)."
            )
        ranks = tuple(int(np.ndim(x)) for x in leaves) if ranks is None else tuple(int(r) for r in ranks)
        if len(ranks) != len(leaves):
            raise ValueError(f"Mask: {len(ranks)} ranks for {len(leaves)} leaves")
        self.keep = keep
        self.prunable = prunable
        self.ranks = ranks

    # pytree protocol: children are the keep leaves' container, aux the static metadata
    def tree_flatten_with_keys(self):
        return ((jax.tree_util.GetAttrKey("keep"), self.keep),), (self.prunable, self.ranks)

    def tree_flatten(self):
        return (self.keep,), (self.prunable, self.ranks)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.keep = children[0]
        obj.prunable, obj.ranks = aux
        return obj

    def replace(self, **changes) -> "Mask":
        """A copy with ``keep`` and/or ``prunable`` replaced (validated); ``ranks`` kept."""
        return Mask(changes.get("keep", self.keep), changes.get("prunable", self.prunable),
                    changes.get("ranks", self.ranks))

    @property
    def batch_dims(self) -> int:
        """Leading seed axes on the leaves (0 for one network's mask)."""
        leaves = self.leaves()
        return int(np.ndim(leaves[0])) - self.ranks[0] if leaves else 0

    def leaves(self) -> list:
        """The ``keep`` leaves in ``jax.tree.leaves`` order."""
        return jax.tree.leaves(self.keep)

    def paths(self) -> list[str]:
        """Path strings of the leaves (see the module docstring for the spelling)."""
        return leaf_paths(self.keep)

    def __repr__(self) -> str:
        n = len(self.prunable)
        seeds = f", seeds axis {np.shape(self.leaves()[0])[0]}" if self.batch_dims else ""
        return f"Mask({n} leaves, {sum(self.prunable)} prunable{seeds})"


# ----------------------------------------------------------------------------- creation


def _default_prunable(path: str, leaf) -> bool:
    return np.ndim(leaf) >= 2


def path_predicate(selector) -> Optional[Callable[[str, Any], bool]]:
    """``predicate(path_string, leaf) -> bool`` from a regex (searched in the path) or a
    callable (returned as is); ``None`` for anything else.

    Example: ``path_predicate("conv.*/kernel")("block1/conv2/kernel", w) is True``.
    """
    if isinstance(selector, (str, re.Pattern)):
        pattern = re.compile(selector) if isinstance(selector, str) else selector
        return lambda path, leaf: pattern.search(path) is not None
    if callable(selector):
        return selector
    return None


def _everything(path: str, leaf) -> bool:
    return True


#: The reserved ``prunable`` words: ``"kernels"`` (the default: leaves with ``ndim >= 2``,
#: the "weights" of the papers) and ``"all"`` (every leaf, biases and normalisation
#: scales/offsets included).
PRUNABLE_WORDS = {"kernels": _default_prunable, "all": _everything}


def _prunable_predicate(prunable: PrunableSpec) -> Callable[[str, Any], bool]:
    if prunable is None:
        return _default_prunable
    if isinstance(prunable, str) and prunable in PRUNABLE_WORDS:
        return PRUNABLE_WORDS[prunable]
    predicate = path_predicate(prunable)
    if predicate is None:
        raise TypeError(
            "prunable must be None or 'kernels' (leaves with ndim >= 2), 'all' (every leaf), a "
            "regex string over leaf paths such as 'Dense_2/kernel', or a predicate "
            f"(path, leaf) -> bool; got {prunable!r}."
        )
    return predicate


def ones_like(params: PyTree, prunable: PrunableSpec = None) -> Mask:
    """An all-True mask for ``params``, recording which leaves may ever be pruned.

    Args:
      params: any pytree of arrays (e.g. Flax ``variables["params"]``).
      prunable: which leaves may be pruned. ``None`` or ``"kernels"`` (default): the
        weight kernels, leaves with ``ndim >= 2`` (Dense ``(in, out)``, Conv
        ``(h, w, in, out)``); biases and normalisation scales/offsets never (the
        Frankle & Carbin convention). ``"all"``: every leaf. Any other string: a regex
        searched in each leaf's path string (``re.search``), e.g. ``"Dense_2/kernel"`` or
        ``"conv.*/kernel"``. A callable: ``predicate(path_string, leaf) -> bool``.

    Returns:
      A :class:`Mask` whose ``keep`` has ``params``' structure, all leaves ``True``.

    Example:
        >>> params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
        >>> ones_like(params).prunable                     # kernels only
        (False, True)
        >>> ones_like(params, "all").prunable              # biases too
        (True, True)
        >>> ones_like(params, r"^(?!dense/kernel)").prunable   # a regex over paths
        (True, False)
    """
    predicate = _prunable_predicate(prunable)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    flags = []
    keeps = []
    for path, leaf in leaves_with_paths:
        flags.append(bool(predicate(path_string(path), leaf)))
        keeps.append(np.ones(np.shape(leaf), dtype=bool))
    # a transfer, not a device program (jnp.ones would compile one per leaf shape)
    return Mask(jax.device_put(jax.tree.unflatten(treedef, keeps)), flags)


def from_tree(keep: PyTree, prunable: PrunableSpec | Sequence[bool] = None) -> Mask:
    """Wraps an existing params-shaped tree of bools (e.g. loaded from disk) as a Mask.

    ``prunable`` is a spec as in :func:`ones_like` or an explicit sequence of flags.
    Non-prunable leaves must be all-True.

    Example: ``from_tree(jax.tree.map(lambda w: w != 0, params))``.
    """
    if isinstance(prunable, (list, tuple)) and all(isinstance(p, (bool, np.bool_)) for p in prunable):
        flags = tuple(bool(p) for p in prunable)
    else:
        flags = ones_like(keep, prunable).prunable
    keep = jax.tree.map(lambda k: np.asarray(jax.device_get(k), dtype=bool), keep)
    for flag, leaf, path in zip(flags, jax.tree.leaves(keep), leaf_paths(keep)):
        if not flag and not leaf.all():  # checked on the host
            raise ValueError(
                f"from_tree: leaf '{path}' is not prunable but has pruned (False) entries; "
                "non-prunable leaves must be all-True (pass prunable= to include it)."
            )
    return Mask(jax.device_put(keep), flags)


# ----------------------------------------------------------------------------- validation


def validate(params: PyTree, mask: Mask, *, batch_dims: int = 0) -> None:
    """Raises ``ValueError`` if ``mask`` does not fit ``params``.

    Names the first mismatching path and both shapes (or the structural difference).
    ``batch_dims`` leading axes of the mask leaves are ignored (a vmapped seeds axis
    on the mask but not on the params).

    Example: ``validate(params, mask)`` returns ``None`` when they match.
    """
    if not isinstance(mask, Mask):
        raise TypeError(
            f"expected a jaxticket Mask, got {type(mask).__name__}; build one with "
            "jaxticket.masks.ones_like(params) or masks.from_tree(bool_tree)."
        )
    p_leaves, p_def = jax.tree_util.tree_flatten_with_path(params)
    m_leaves, m_def = jax.tree_util.tree_flatten_with_path(mask.keep)
    if p_def != m_def:
        p_paths = [path_string(p) for p, _ in p_leaves]
        m_paths = [path_string(p) for p, _ in m_leaves]
        for i, (pp, mp) in enumerate(zip(p_paths, m_paths)):
            if pp != mp:
                raise ValueError(
                    f"mask does not match params: leaf {i} is '{pp}' in params but '{mp}' in "
                    "the mask. The mask was made for another model; build it with "
                    "masks.ones_like(params) for these params."
                )
        if len(p_paths) != len(m_paths):
            longer, which = (p_paths, "params") if len(p_paths) > len(m_paths) else (m_paths, "mask")
            raise ValueError(
                f"mask does not match params: params have {len(p_paths)} leaves, the mask "
                f"{len(m_paths)}; first extra leaf in the {which}: "
                f"'{longer[min(len(p_paths), len(m_paths))]}'. Build the mask with "
                "masks.ones_like(params) for these params."
            )
        raise ValueError(
            f"mask does not match params: tree structures differ ({p_def} vs {m_def}). "
            "Build the mask with masks.ones_like(params) for these params."
        )
    for (path, p), (_, m) in zip(p_leaves, m_leaves):
        m_shape = tuple(np.shape(m))[batch_dims:]
        if tuple(np.shape(p)) != m_shape:
            raise ValueError(
                f"mask does not match params at '{path_string(path)}': params shape "
                f"{tuple(np.shape(p))}, mask shape {m_shape}"
                + (f" (after {batch_dims} batch axes)" if batch_dims else "")
                + ". The mask was made for another model or configuration."
            )


# ----------------------------------------------------------------------------- apply


def apply(params: PyTree, mask: Mask) -> PyTree:
    """``params`` with pruned entries set to exactly 0, dtypes preserved.

    Non-prunable leaves are returned as they are (they are all-True by construction).
    Works under ``jit`` and ``vmap``.

    Example:
        >>> mask = ones_like({"k": jnp.ones((1, 2))}).replace(keep={"k": jnp.array([[True, False]])})
        >>> masked = apply({"k": jnp.array([[1.0, 2.0]])}, mask)  # same tree, zeros where pruned
        >>> masked["k"].tolist()
        [[1.0, 0.0]]
    """
    validate(params, mask)
    p_leaves, treedef = jax.tree.flatten(params)
    out = [
        jnp.where(k, p, jnp.zeros((), dtype=jnp.result_type(p))) if flag else p
        for p, k, flag in zip(p_leaves, mask.leaves(), mask.prunable)
    ]
    return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------- counting


def count(mask: Mask) -> tuple[jax.Array, int]:
    """``(kept, total)`` over prunable leaves: kept is an int array (traced under jit).

    With a leading seeds axis (vmapped mask) call it under ``jax.vmap``.

    Example:
        >>> mask = ones_like({"w": jnp.ones((3, 4)), "b": jnp.ones(4)})
        >>> kept, total = count(mask)       # the bias is not prunable: not counted
        >>> int(kept), total
        (12, 12)
    """
    kept = jnp.zeros((), dtype=jnp.int32)
    total = 0
    for leaf, flag in zip(mask.leaves(), mask.prunable):
        if flag:
            kept = kept + jnp.sum(leaf, dtype=jnp.int32)
            total += int(np.prod(np.shape(leaf)))
    return kept, total


def emptied_leaves(before: Mask, after: Mask, *, batch_dims: Optional[int] = None) -> list[str]:
    """Paths of the prunable leaves that had survivors in ``before`` and none in ``after``.

    Host values (not for jit). With leading seed axes (``batch_dims``, default the mask's
    own :attr:`Mask.batch_dims`) a leaf counts as emptied when it is emptied for any seed. Removing a layer's last weight disconnects
    the network, so the IMP engine refuses it unless asked (``allow_empty_layers``).

    Example:
        >>> m = ones_like({"w": jnp.ones((2, 2))})
        >>> emptied_leaves(m, m.replace(keep={"w": jnp.zeros((2, 2), bool)}))
        ['w']
    """
    batch_dims = before.batch_dims if batch_dims is None else batch_dims
    out = []
    for path, b, a, flag in zip(before.paths(), before.leaves(), after.leaves(), before.prunable):
        if not flag:
            continue
        b, a = np.asarray(jax.device_get(b)), np.asarray(jax.device_get(a))
        lead = b.shape[:batch_dims]
        had = b.reshape(*lead, -1).any(-1)
        has = a.reshape(*lead, -1).any(-1)
        if np.any(had & ~has):
            out.append(path)
    return out


def host_density(mask: Mask, *, batch_dims: Optional[int] = None) -> np.ndarray:
    """:func:`density` on the host with NumPy (no device program), per leading seed axis:
    a float32 array of shape ``[*batch]`` (a scalar array for ``batch_dims=0``), bitwise
    equal to :func:`density`.

    Example:
        >>> m = ones_like({"w": jnp.ones((3, 2, 2))})
        >>> host_density(m.replace(keep={"w": np.tril(np.ones((3, 2, 2), bool))}), batch_dims=1)
        array([0.75, 0.75, 0.75], dtype=float32)
    """
    batch_dims = mask.batch_dims if batch_dims is None else batch_dims
    leaves = [np.asarray(jax.device_get(leaf)) for leaf, flag in zip(mask.leaves(), mask.prunable) if flag]
    if not leaves:
        return np.ones(np.shape(mask.leaves()[0])[:batch_dims] if mask.leaves() else (), np.float32)
    lead = leaves[0].shape[:batch_dims]
    kept = sum(leaf.reshape(*lead, -1).sum(-1, dtype=np.int64) for leaf in leaves)
    total = sum(int(np.prod(leaf.shape[batch_dims:])) for leaf in leaves)
    return np.asarray(np.asarray(kept, np.int32).astype(np.float32) / np.float32(total), np.float32)


def density(mask: Mask) -> jax.Array:
    """Fraction of prunable entries kept, in [0, 1] ("percent of weights remaining"/100).

    Only prunable leaves count. A mask with no prunable leaves has density 1.
    Works under ``jit`` / ``vmap``.

    Example: after ``magnitude(0.2)`` applied L times, ``density(mask) ~= 0.8 ** L``.
    """
    kept, total = count(mask)
    if total == 0:
        return jnp.ones((), dtype=jnp.float32)
    return kept.astype(jnp.float32) / jnp.float32(total)


def sparsity(mask: Mask) -> jax.Array:
    """Fraction of prunable entries removed: ``1 - density(mask)``; a float32 scalar (one
    value per replica under ``vmap``).

    Example:
        >>> import jax.numpy as jnp
        >>> mask = ones_like({"w": jnp.ones((2, 3)), "b": jnp.ones(3)})   # kernels only
        >>> mask = mask.replace(keep={"w": jnp.array([[1, 0, 0], [1, 1, 0]], bool), "b": jnp.ones(3, bool)})
        >>> float(sparsity(mask))   # 3 of the 6 kernel entries removed; the bias does not count
        0.5
    """
    return 1.0 - density(mask)


# ----------------------------------------------------------------------------- summary


class LeafCount(NamedTuple):
    path: str
    shape: tuple
    kept: int
    total: int
    prunable: bool


@dataclasses.dataclass(frozen=True)
class MaskSummary:
    """Per-leaf kept/total counts; ``str()`` prints a table. Host values (not for jit)."""

    rows: tuple[LeafCount, ...]

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.rows if r.prunable)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.rows if r.prunable)

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 1.0

    def as_dicts(self) -> list[dict]:
        """Rows as plain dicts (for JSON/CSV)."""
        return [
            {**r._asdict(), "shape": list(r.shape), "density": r.kept / r.total if r.total else 1.0}
            for r in self.rows
        ]

    def __str__(self) -> str:
        header = ("leaf", "shape", "kept", "total", "density", "prunable")
        lines = [
            (
                r.path,
                "x".join(map(str, r.shape)) or "()",
                f"{r.kept:,}",
                f"{r.total:,}",
                f"{(r.kept / r.total if r.total else 1.0):.4f}",
                "yes" if r.prunable else "no",
            )
            for r in self.rows
        ]
        lines.append(("total (prunable)", "", f"{self.kept:,}", f"{self.total:,}", f"{self.density:.4f}", ""))
        widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
        fmt = lambda cells: "  ".join(  # noqa: E731
            c.ljust(w) if i in (0, 1, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )
        rule = "  ".join("-" * w for w in widths)
        return "\n".join([fmt(header), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])


def summary(mask: Mask) -> MaskSummary:
    """Per-leaf kept and total counts of a (non-vmapped) mask, printable as a table.

    Example:
        >>> mask = ones_like({"Dense_0": {"kernel": jnp.ones((784, 300)), "bias": jnp.ones(300)}})
        >>> print(summary(mask))  # doctest: +NORMALIZE_WHITESPACE
        leaf              shape       kept    total  density  prunable
        ----------------  -------  -------  -------  -------  --------
        Dense_0/bias      300          300      300   1.0000  no
        Dense_0/kernel    784x300  235,200  235,200   1.0000  yes
        ----------------  -------  -------  -------  -------  --------
        total (prunable)           235,200  235,200   1.0000
    """
    rows = []
    for path, leaf, flag in zip(mask.paths(), mask.leaves(), mask.prunable):
        arr = np.asarray(jax.device_get(leaf))
        rows.append(LeafCount(path, tuple(arr.shape), int(arr.sum()), int(arr.size), flag))
    return MaskSummary(tuple(rows))
