"""Shared tiny fixtures: toy data, tiny tasks, the embedded digits.

Everything here is small enough for a 2-core CPU: an 8x8 toy image task whose label is
the brightest of the first 4 pixels (learnable in tens of steps), LeNet-32-16 on it,
and the 8x8 scikit-learn digits bundled with the package. Tests take them as fixtures
(``toy_config``, ``toy_task``, ``toy_dataset``, ``toy``, ``digits``), never by importing
this file.

JAX's persistent compilation cache is switched on here as the ``jaxticket`` command
switches it on (:func:`jaxticket.compilation_cache.enable_default`); the root
``conftest.py`` points it at a fresh folder shared by the whole test session.
"""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxticket import compilation_cache
from jaxticket import data as data_lib
from jaxticket import train

compilation_cache.enable_default()


def _toy_arrays(n=256, shape=(8, 8, 1), seed=0):
    """Random uint8 images; the label is the brightest of the first 4 pixels (learnable)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = images.reshape(n, -1)[:, :4].argmax(1).astype(np.int32)
    return images, labels


def _toy_dataset(n=256, shape=(8, 8, 1), seed=0):
    """:func:`_toy_arrays` on the device, normalised with mean 0.5 / std 0.25."""
    images, labels = _toy_arrays(n, shape, seed)
    return data_lib.ArrayDataset(jnp.asarray(images), jnp.asarray(labels), "toy", 10,
                                 data_lib.Normalize((0.5,) * shape[-1], (0.25,) * shape[-1]))


_TOY_CONFIG = train.TrainConfig(model="lenet_32_16", input_shape=(8, 8, 1), lr=0.05, momentum=0.9)
_TOY_FIT = train.FitSettings(batch_size=16, steps=40, eval_batch_size=48, chunk_size=8)


def _toy_task(**changes):
    """The Task of :data:`_TOY_CONFIG` with ``changes`` (LeNet-32-16, SGD momentum 0.9)."""
    return train.task_from_config(_TOY_CONFIG.replace(**changes))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after each test module. Every live CPU executable
    holds a few memory mappings; the whole suite in one process compiles enough of them
    to reach Linux's ``vm.max_map_count`` (65,530), where XLA's next compilation fails
    ("LLVM compilation error: Cannot allocate memory") and the process segfaults."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def toy_config() -> train.TrainConfig:
    """The toy TrainConfig: LeNet-32-16 on 8x8x1 images, SGD lr 0.05 momentum 0.9 (how it
    trains: ``toy_fit``)."""
    return _TOY_CONFIG


@pytest.fixture(scope="session")
def toy_fit() -> train.FitSettings:
    """How the toy runs train: 40 steps of batch 16 in chunks of 8, evaluation batches of 48."""
    return _TOY_FIT


@pytest.fixture(scope="session")
def toy_task():
    """A factory: ``toy_task(**changes)`` -> the Task of ``toy_config.replace(**changes)``
    (equal calls give equal Tasks, which share their compiled programs)."""
    return _toy_task


@pytest.fixture(scope="session")
def toy_dataset():
    """A factory: ``toy_dataset(n=256, shape=(8, 8, 1), seed=0)`` -> random uint8 images on
    the device (an ArrayDataset, normalised with mean 0.5 / std 0.25) whose label is the
    brightest of the first 4 pixels."""
    return _toy_dataset


@pytest.fixture(scope="session")
def toy():
    """``toy_dataset()``: the 256 default toy images."""
    return _toy_dataset()


@pytest.fixture(scope="session")
def digits():
    """The embedded 8x8 digits with 100 validation images (:class:`jaxticket.data.Data`)."""
    return data_lib.splits("digits", validation_size=100)

