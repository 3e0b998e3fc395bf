"""Seeds-as-an-axis and device-mesh helpers (``jax.sharding``, no ``pmap``).

A mesh for training has two named axes:

* ``"replica"`` (:data:`REPLICA`): the seeds axis. A vmapped train state (leading
  ``S`` axis on every leaf, see :func:`jaxticket.train.init_state` with ``seeds=S``) is
  split over it; ``S`` must be a multiple of its size.
* ``"data"`` (:data:`DATA`): the batch axis. Every replica's batch is split over it
  (data parallelism); parameters are replicated along it and XLA inserts the gradient
  all-reduce.

The dataset is replicated on every device (it lives on the device once; each replica
gathers its own batch indices). The same code runs on one CPU (mesh ``(1, 1)``), one
GPU, a multi-GPU host and a multi-host pod: call :func:`initialize_distributed` first on
every process, build the mesh over ``jax.devices()`` (all processes' devices), and put
host values with :func:`put`, which builds global arrays with
``jax.make_array_from_callback`` from the full host value that every process holds.

Example (8 devices: 4 replicas x batch split in 2)::

    from jaxticket import parallel, train

    mesh = parallel.make_mesh(replicas=4, data=2)
    state = train.init_state(config, seeds=4)
    state = parallel.shard_state(state, mesh)             # leading axis over "replica"
    train_ds = parallel.replicate(train_ds, mesh)
    result = train.fit(config, state, train_ds, mesh=mesh)
    params = parallel.to_host(result.state.params)        # numpy, on every process
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any

REPLICA = "replica"
DATA = "data"

__all__ = [
    "DATA",
    "MeshError",
    "REPLICA",
    "agree",
    "default_mesh",
    "get_default_mesh",
    "set_default_mesh",
    "is_primary",
    "resolve_mesh",
    "sync",
    "batch_sharding",
    "constrain_batch",
    "constrain_state",
    "initialize_distributed",
    "make_mesh",
    "put",
    "replicate",
    "replicated",
    "shard_state",
    "state_sharding",
    "to_host",
]


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs) -> None:
    """``jax.distributed.initialize`` (once per process, before any other JAX call).

    On TPU pods and SLURM/Cloud setups all arguments may be left out (auto-detected).
    Locally: ``initialize_distributed("localhost:12345", num_processes=2, process_id=i)``.
    """
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id, **kwargs)


def make_mesh(replicas: int = 1, data: int | None = None, *, devices=None) -> Mesh:
    """A ``(replicas, data)`` mesh with axes ``("replica", "data")`` over ``devices``.

    ``data=None`` uses all remaining devices: ``len(devices) // replicas``. Axis types are
    ``Auto`` (GSPMD propagation with sharding constraints), not the ``Explicit`` default
    of ``jax.make_mesh``.

    Example: ``make_mesh(4, 2)`` on 8 devices; ``make_mesh()`` = pure data parallelism.
    """
    devices = jax.devices() if devices is None else list(devices)
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if data is None:
        data = max(1, len(devices) // replicas)
    if replicas * data > len(devices):
        raise ValueError(
            f"mesh ({replicas} replicas x {data} data) needs {replicas * data} devices, "
            f"only {len(devices)} available")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((replicas, data), (REPLICA, DATA), axis_types=auto,
                         devices=devices[: replicas * data])


class MeshError(ValueError):
    """A mesh that does not fit the run: seeds or batch not divisible, too many devices."""


def _auto_shape(devices: int, seeds: int, batch_size: Optional[int]) -> tuple[int, int]:
    replicas = math.gcd(devices, seeds)
    data = devices // replicas
    if batch_size is not None:
        data = math.gcd(data, batch_size)
    return replicas, data


_DEFAULT_MESH = None


def set_default_mesh(mesh) -> None:
    """The placement every run takes when given ``mesh=None`` (``jt.imp``, its branches,
    ``jt.run_imp``, ``jt.instability_sweep``): any ``mesh`` :func:`resolve_mesh` takes
    (``"auto"`` is resolved per run, for its own seeds), or ``None`` for one device again.
    The experiment scripts' ``--mesh`` sets it for the whole script."""
    global _DEFAULT_MESH
    _DEFAULT_MESH = mesh


def get_default_mesh():
    """What :func:`set_default_mesh` set (``None``: one device)."""
    return _DEFAULT_MESH


@contextlib.contextmanager
def default_mesh(mesh):
    """:func:`set_default_mesh` for a ``with`` block, restored after it.

    Example:
        >>> with default_mesh("auto"):
        ...     dict(resolve_mesh(None, seeds=1).shape)
        {'replica': 1, 'data': 1}
        >>> resolve_mesh(None, seeds=1) is None
        True
    """
    before = _DEFAULT_MESH
    set_default_mesh(mesh)
    try:
        yield
    finally:
        set_default_mesh(before)


def resolve_mesh(mesh, *, seeds: int, batch_size: Optional[int] = None) -> Optional[Mesh]:
    """The mesh a run trains on, checked against its ``seeds`` and ``batch_size``.

    ``mesh``: ``None`` (one device, no mesh), a :class:`~jax.sharding.Mesh` from
    :func:`make_mesh`, an ``(R, D)`` pair or ``"R,D"`` (``R`` replicas x ``D`` data), or
    ``"auto"`` (``None`` takes :func:`set_default_mesh`'s, by default none):
    every device of every process, replicas first while the seeds divide:
    ``R = gcd(devices, seeds)``, then ``D = gcd(devices // R, batch_size)`` (devices left
    over by that rule stay idle, and the run says so in its log). A mesh that does not fit
    is a :class:`MeshError` naming the fix.

    Example:
        >>> resolve_mesh(None, seeds=4) is None
        True
        >>> dict(resolve_mesh((1, 1), seeds=4).shape)
        {'replica': 1, 'data': 1}
        >>> resolve_mesh("3,1", seeds=4)
        Traceback (most recent call last):
        ...
        jaxticket.parallel.MeshError: mesh 3,1: 4 seeds cannot be split evenly over 3 replica devices; choose seeds a multiple of 3, or R dividing 4
    """
    if mesh is None:
        mesh = _DEFAULT_MESH
    if mesh is None:
        return None
    if isinstance(mesh, Mesh):
        shape = (int(mesh.shape.get(REPLICA, 0)), int(mesh.shape.get(DATA, 0)))
        if set(mesh.axis_names) != {REPLICA, DATA}:
            raise MeshError(f"a mesh needs the axes ('{REPLICA}', '{DATA}'), got {tuple(mesh.axis_names)}; "
                            "build it with jaxticket.parallel.make_mesh(replicas=R, data=D)")
    elif isinstance(mesh, str) and mesh.strip().lower() == "auto":
        shape = _auto_shape(jax.device_count(), seeds, batch_size)
    else:
        try:
            parts = [int(x) for x in (mesh.split(",") if isinstance(mesh, str) else mesh)]
        except (TypeError, ValueError):
            parts = []
        if len(parts) != 2 or min(parts) < 1:
            raise MeshError(f"mesh {mesh!r}: give R,D (R replicas x D data devices, both >= 1, e.g. 4,2), "
                            "'auto', or a jaxticket.parallel.make_mesh mesh") from None
        shape = (parts[0], parts[1])
    replicas, data = shape
    name = f"{replicas},{data}"
    if seeds % replicas:
        raise MeshError(f"mesh {name}: {seeds} seeds cannot be split evenly over {replicas} replica devices; "
                        f"choose seeds a multiple of {replicas}, or R dividing {seeds}")
    if batch_size is not None and batch_size % data:
        raise MeshError(f"mesh {name}: a batch of {batch_size} cannot be split evenly over {data} data devices; "
                        f"choose batch_size a multiple of {data}, or D dividing {batch_size}")
    if replicas * data > jax.device_count():
        raise MeshError(f"mesh {name} needs {replicas * data} devices, {jax.device_count()} exist "
                        f"({jax.process_count()} process(es)); choose R x D <= {jax.device_count()}")
    return mesh if isinstance(mesh, Mesh) else make_mesh(replicas, data)


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0 of a multi-process run)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """A barrier of every process (nothing on one process): where one process needs
    files another has written."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxticket:{name}")


def agree(ok: bool) -> bool:
    """Process 0's ``ok`` on every process (itself on one process): processes act on one
    decision (e.g. whether process 0 got the run directory's lock)."""
    if jax.process_count() == 1:
        return bool(ok)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(ok))))


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding on ``mesh`` (``PartitionSpec()``)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of one replica's batch ``[B, ...]``: leading axis over ``"data"``."""
    return NamedSharding(mesh, P(DATA))


def state_sharding(state: PyTree, mesh: Mesh, *, batched: bool) -> PyTree:
    """Per-leaf shardings of a train state: ``P("replica")`` on the leading seeds axis
    when ``batched`` (every leaf ``[S, ...]``), else replicated."""
    spec = P(REPLICA) if batched else P()
    return jax.tree.map(lambda _: NamedSharding(mesh, spec), state)


def _host_value(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        raise ValueError("put: the value is already a global array spread over processes; "
                         "pass host values (numpy) or process-local arrays")
    return np.asarray(x)


def put(tree: PyTree, shardings: PyTree | NamedSharding) -> PyTree:
    """Global arrays with ``shardings`` (one sharding or a tree of them) from host values.

    Every process passes the *same full* value (e.g. a state built from the same seeds,
    a dataset loaded from the same files); each process fills only its addressable
    shards. Correct for one or many processes.
    """
    leaves, treedef = jax.tree.flatten(tree)
    if isinstance(shardings, jax.sharding.Sharding):
        sh = [shardings] * len(leaves)
    else:
        sh = treedef.flatten_up_to(shardings)
    out = []
    for x, s in zip(leaves, sh):
        if isinstance(x, jax.Array) and x.sharding == s:
            out.append(x)
            continue
        host = _host_value(x)
        out.append(jax.make_array_from_callback(host.shape, s, lambda idx, h=host: h[idx]))
    return jax.tree.unflatten(treedef, out)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """``tree`` (e.g. an ``ArrayDataset``) fully replicated on every device of ``mesh``."""
    return put(tree, replicated(mesh))


def shard_state(state: PyTree, mesh: Mesh) -> PyTree:
    """A train state on ``mesh``: seeds axis over ``"replica"`` when it has one
    (``state.step.ndim == 1``), else replicated. ``S % mesh.shape["replica"]`` must be 0."""
    batched = np.ndim(state.step) == 1
    if batched:
        s, r = int(np.shape(state.step)[0]), mesh.shape[REPLICA]
        if s % r:
            raise ValueError(f"{s} replicas cannot be split evenly over a 'replica' mesh axis of size {r}")
    elif mesh.shape[REPLICA] != 1:
        raise ValueError(
            f"an unbatched state on a mesh with {mesh.shape[REPLICA]} replica devices would "
            "compute the same thing on each; use make_mesh(replicas=1) or init_state(seeds=S)")
    return put(state, state_sharding(state, mesh, batched=batched))


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside jit: shard one replica's batch ``[B, ...]`` over ``"data"`` (no-op if no mesh).

    Under ``jax.vmap(..., spmd_axis_name="replica")`` the seeds axis goes over ``"replica"``.
    """
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def constrain_state(state: PyTree, mesh: Mesh | None, *, batched: bool) -> PyTree:
    """Inside jit: keep a (possibly vmapped) state on its sharding (no-op if no mesh)."""
    if mesh is None:
        return state
    return jax.lax.with_sharding_constraint(state, state_sharding(state, mesh, batched=batched))


def to_host(tree: PyTree) -> PyTree:
    """Numpy copies of ``tree``'s leaves on every process (gathers across processes)."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)
