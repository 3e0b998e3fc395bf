"""Where a training step's batch comes from: device-resident arrays or a host stream.

* Device-resident data (an :class:`~jaxticket.data.ArrayDataset`, on the device once):
  the batch of step ``s`` is gathered inside the compiled step from the state's data
  key (:func:`jaxticket.data.make_batch`), so a compiled call can run many steps.
* Host-streamed data (a :class:`HostStream` over a random-access stream of batches,
  e.g. ImageNet from :func:`jaxticket.data.make_stream`): ``stream[s]`` is the batch of
  step ``s``; ``fit`` fetches each chunk's batches on the host (the next chunk in the
  background), stacks them ``[n, B, ...]`` and the compiled call indexes them.

A *feed* is the static half of a source (hashable, part of the compiled program's
key): :class:`DeviceFeed` and :class:`StreamFeed` both answer ``feed.batch(data, state,
i) -> (x, y)`` inside ``jit``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
from typing import Any, Optional

import jax
import numpy as np

from jaxticket import parallel

__all__ = ["DeviceFeed", "HostStream", "StreamFeed", "as_source", "is_streamed", "steps_per_epoch"]


@dataclasses.dataclass(frozen=True, eq=False)
class HostStream:
    """A host-streamed dataset for :func:`~jaxticket.train.fit` and :func:`~jaxticket.train.evaluate`.

    Attributes:
      stream: random access to batches, ``stream[i]`` -> ``{"image": uint8 [b, H, W, C],
        "label": int32 [b], "mask": bool [b]}`` with ``b`` this process's share of the
        global batch (``jaxticket.data.make_stream`` returns such a grain MapDataset).
        For training ``stream[step]`` is the batch of global step ``step`` (augmented
        on the host); for evaluation ``i`` runs over ``range(len(stream))``, padding
        examples marked ``mask=False``.
      name: registered dataset name, for the normalisation statistics.
      steps_per_epoch: training steps per epoch (milestones in epochs); ``None``: unknown.
      max_chunk_steps: at most this many training batches are stacked and sent to the
        device per compiled call: bounds the device memory the batches take.
      num_threads: host threads fetching batches.

    Data order is a pure function of (the stream's seed, step), so resuming and
    rewinding need no iterator replay; the state's ``data_key`` / ``aug_key`` are not
    used. Replicas (a seeds axis) therefore all train on the same batches in the same
    order: for different data orders per replica train them as separate runs over
    streams with different seeds.
    """

    stream: Any
    name: str = "imagenet2012"
    steps_per_epoch: Optional[int] = None
    max_chunk_steps: int = 8
    num_threads: int = 8

    def __len__(self) -> int:
        return len(self.stream)

    def batch(self, i: int) -> dict:
        return self.stream[int(i)]

    @property
    def preprocess(self):
        from jaxticket import data as data_lib

        return data_lib.Normalize(*data_lib.normalization_stats(self.name))


def as_source(ds, name: str = "imagenet2012"):
    """``ds`` itself, or a bare random-access stream of batches wrapped as a :class:`HostStream`."""
    if ds is None or isinstance(ds, HostStream) or hasattr(ds, "labels"):
        return ds
    if hasattr(ds, "__getitem__") and hasattr(ds, "__len__"):
        return HostStream(ds, name=name)
    raise TypeError(f"a dataset is a jaxticket.data.ArrayDataset or a random-access stream of batches "
                    f"(HostStream), got {type(ds).__name__}")


def is_streamed(ds) -> bool:
    return isinstance(ds, HostStream)


def steps_per_epoch(ds, batch_size: int) -> Optional[int]:
    """Training steps per epoch of ``ds`` at ``batch_size`` (``None`` for a stream that does
    not say)."""
    if is_streamed(ds):
        return ds.steps_per_epoch
    n = int(ds.labels.shape[0])
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} > {n} training examples")
    return n // batch_size


# ----------------------------------------------------------------------------- feeds


@dataclasses.dataclass(frozen=True)
class DeviceFeed:
    """Batches gathered on the device from an ArrayDataset: step ``state.step``'s batch."""

    batch_size: int
    augment: Any = False

    def batch(self, ds, state, i):
        from jaxticket import data as data_lib

        del i
        return data_lib.make_batch(ds, jax.random.wrap_key_data(state.data_key),
                                   jax.random.wrap_key_data(state.aug_key), state.step,
                                   self.batch_size, augment=self.augment)


@dataclasses.dataclass(frozen=True)
class StreamFeed:
    """Batch ``i`` of a fetched, stacked chunk ``{"image": [n, B, ...], "label": [n, B]}``."""

    preprocess: Any

    def batch(self, chunk, state, i):
        del state
        return self.preprocess(chunk["image"][i]), chunk["label"][i]


# ----------------------------------------------------------------------------- host side


def put_host(arrays: dict, mesh, lead: int) -> dict:
    """Host arrays -> device arrays, batch axis ``lead`` sharded over the mesh's ``"data"``
    axis; with several processes each passes its local shard."""
    if mesh is None:
        if jax.process_count() > 1:
            raise ValueError("host-streamed data on several processes needs a mesh")
        return {k: jax.device_put(v) for k, v in arrays.items()}
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec(*([None] * lead), parallel.DATA))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in arrays.items()}


def prefetched(fn, items, pool, depth: int):
    """``fn(item)`` for each item, computed ``depth`` ahead on ``pool``, in order."""
    items, queue = iter(items), collections.deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > depth:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


class ChunkFetcher:
    """Stacked host batches ``[length, b, ...]`` of steps ``s..s+n-1`` for each planned
    chunk ``(s, n)`` (padded to ``length`` by repeating the last batch, so every chunk
    has one shape), the next chunk fetched in the background while the device trains."""

    def __init__(self, ds: HostStream, plan: list, batch_size: int, length: int):
        self.ds, self.batch_size, self.length = ds, batch_size, length
        self._pool = cf.ThreadPoolExecutor(max(1, ds.num_threads), thread_name_prefix="jaxticket-fetch")
        self._bg = cf.ThreadPoolExecutor(1, thread_name_prefix="jaxticket-chunk")
        self._chunks = prefetched(self._fetch, plan, self._bg, depth=1)

    def _fetch(self, start_n):
        start, n = start_n
        batches = list(self._pool.map(self.ds.batch, range(start, start + n)))
        batches += [batches[-1]] * (self.length - n)
        out = {k: np.stack([np.asarray(b[k]) for b in batches]) for k in ("image", "label", "mask")}
        if out["image"].shape[1] * jax.process_count() != self.batch_size:
            raise ValueError(f"the stream's batches hold {out['image'].shape[1]} examples per process "
                             f"({jax.process_count()} processes), batch_size={self.batch_size}")
        if not out["mask"].all():
            raise ValueError("a training stream yielded masked-out (padding) examples; build it with train=True")
        return out

    def next(self) -> dict:
        return next(self._chunks)

    def close(self):
        self._chunks.close()
        self._bg.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
