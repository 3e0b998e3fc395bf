"""Tests for jaxticket.checkpoints: roundtrips, garbage collection, config guard, kills."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxticket import checkpoints as ckpts
from jaxticket import masks, rundir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: optax.OptState
    mask: masks.Mask
    rng: jax.Array
    tag: str = flax.struct.field(pytree_node=False, default="dense")


@dataclasses.dataclass(frozen=True)
class Cfg:
    model: str = "lenet_300_100"
    lr: float = 0.1
    sizes: tuple = (300, 100)
    seeds: int = 1


def _params(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "Dense_0": {"kernel": jax.random.normal(k1, (6, 5)), "bias": jnp.zeros(5)},
        "Dense_1": {
            "kernel": jax.random.normal(k2, (5, 3)).astype(jnp.bfloat16),
            "bias": jnp.full((3,), 0.5, jnp.bfloat16),
        },
    }


def _state(tx, seed=0, step=7):
    params = _params(seed)
    opt_state = tx.init(params)
    # make the optimizer state non-trivial (moments, counts)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.25, params)
    _, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    mask = masks.ones_like(params)
    keep = dict(mask.keep)
    keep["Dense_0"] = {**keep["Dense_0"], "kernel": jax.random.bernoulli(jax.random.key(3), 0.5, (6, 5))}
    mask = mask.replace(keep=keep)
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        batch_stats={"BatchNorm_0": {"mean": jnp.arange(4.0), "var": jnp.ones(4)}},
        opt_state=opt_state,
        mask=mask,
        rng=jax.random.key(seed + 11),
        tag="sparse",
    )


def _vmapped_state(tx, seeds=4):
    return jax.jit(jax.vmap(lambda s: _state(tx, 0, 7).replace(
        params=jax.tree.map(lambda p: p + s.astype(p.dtype), _params(0)),
        rng=jax.random.fold_in(jax.random.key(5), s),
    )))(jnp.arange(seeds))


def _raw(x):
    if jnp.issubdtype(getattr(x, "dtype", np.int32), jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x)), str(x.dtype)
    return np.asarray(x), str(getattr(x, "dtype", type(x)))


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        (xv, xd), (yv, yd) = _raw(x), _raw(y)
        assert xd == yd
        assert xv.shape == yv.shape
        assert xv.tobytes() == yv.tobytes()


def _zeros_like(tree):
    """A target with the same structure/dtypes/shardings but different values."""
    def zero(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(jnp.zeros_like(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jnp.zeros_like(x)
    return jax.tree.map(zero, tree)


OPTIMIZERS = {
    "sgd_momentum": optax.sgd(0.1, momentum=0.9),
    "adam_schedule": optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adam(optax.linear_schedule(1e-3, 0.0, 100)),
        optax.scale_by_schedule(optax.constant_schedule(1.0)),
    ),
}


# ----------------------------------------------------------------------------- roundtrips


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_roundtrip_bitwise(tmp_path, opt):
    state = _state(OPTIMIZERS[opt])
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(7, state)
        restored = ck.restore(7, _zeros_like(state))
    assert_bitwise_equal(restored, state)
    assert isinstance(restored, TrainState) and restored.tag == "sparse"
    assert restored.mask.prunable == state.mask.prunable
    assert restored.rng.dtype == state.rng.dtype
    assert restored.params["Dense_1"]["kernel"].dtype == jnp.bfloat16
    assert restored.mask.keep["Dense_0"]["kernel"].dtype == jnp.bool_


def test_roundtrip_seeds_axis_and_key_batch(tmp_path):
    state = _vmapped_state(OPTIMIZERS["adam_schedule"], seeds=4)
    assert state.rng.shape == (4,) and state.params["Dense_0"]["kernel"].shape == (4, 6, 5)
    extra = {"state": state, "data_keys": jax.random.split(jax.random.key(9), 8)}
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg(seeds=4)) as ck:
        ck.save_rewind_point(0, extra)
        restored = ck.restore_rewind_point(0, _zeros_like(extra))
    assert_bitwise_equal(restored, extra)
    assert str(restored["data_keys"].dtype) == "key<fry>" and restored["data_keys"].shape == (8,)


def test_restore_into_shape_dtype_structs(tmp_path):
    state = _state(OPTIMIZERS["sgd_momentum"])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state
    )
    no_sharding = jax.eval_shape(lambda: state)  # ShapeDtypeStructs without sharding
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(1, state)
        assert_bitwise_equal(ck.restore(1, abstract), state)
        restored = ck.restore(1, no_sharding)
    assert_bitwise_equal(restored, state)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))  # numpy mask leaves too


def test_rbg_key_impl_roundtrip(tmp_path):
    tree = {"k": jax.random.key(3, impl="rbg"), "w": jnp.ones(3)}
    with ckpts.RunCheckpoints(tmp_path / "run", {}) as ck:
        ck.save(0, tree)
        restored = ck.restore(0, jax.eval_shape(lambda: tree))
    assert_bitwise_equal(restored, tree)


def test_numpy_and_python_leaves(tmp_path):
    tree = {"a": np.arange(5, dtype=np.int64), "n": 3, "x": np.float32(2.5), "u": jnp.arange(4, dtype=jnp.uint8)}
    with ckpts.RunCheckpoints(tmp_path / "run", {}) as ck:
        ck.save(0, tree)
        restored = ck.restore(0, tree)
    assert isinstance(restored["a"], np.ndarray) and restored["a"].dtype == np.int64
    np.testing.assert_array_equal(restored["a"], tree["a"])
    assert restored["n"] == 3 and isinstance(restored["n"], int)
    assert restored["x"] == np.float32(2.5)
    assert_bitwise_equal(restored["u"], tree["u"])


# ----------------------------------------------------------------------------- steps, GC


def test_keep_last_gc_keeps_rewind_points(tmp_path):
    tx = OPTIMIZERS["sgd_momentum"]
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg(), keep_last=2) as ck:
        assert ck.latest_step() is None and ck.rewind_steps() == []
        ck.save_rewind_point(0, _state(tx, step=0))
        for step in (10, 20, 30, 40):
            ck.save(step, _state(tx, step=step))
            if step == 20:
                ck.save_rewind_point(20, _state(tx, step=20))
        assert ck.latest_step() == 40
        assert ck.steps() == [30, 40]
        assert ck.rewind_steps() == [0, 20]
        assert int(ck.restore_rewind_point(0, _state(tx)).step) == 0
        assert int(ck.restore(30, _state(tx)).step) == 30
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if not p.name.startswith(".")) == ["30", "40"]


def test_resume_same_config_sees_old_steps(tmp_path):
    tx = OPTIMIZERS["sgd_momentum"]
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(5, _state(tx, step=5))
        ck.save_rewind_point(0, _state(tx, step=0))
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        assert ck.latest_step() == 5 and ck.rewind_steps() == [0]
        assert int(ck.restore(5, _state(tx)).step) == 5
        ck.save(6, _state(tx, step=6))
        assert ck.latest_step() == 6


def test_save_step_order(tmp_path):
    tx = OPTIMIZERS["sgd_momentum"]
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(10, _state(tx, step=10))
        with pytest.raises(ValueError, match="must increase"):
            ck.save(5, _state(tx, step=5))
        ck.save(10, _state(tx, step=11))  # the latest step again: replaced
        assert ck.steps() == [10] and int(ck.restore(10, _state(tx)).step) == 11
        ck.save_rewind_point(3, _state(tx, step=3))
        ck.save_rewind_point(3, _state(tx, step=4))  # rewind points: replaced
        assert int(ck.restore_rewind_point(3, _state(tx)).step) == 4


# ----------------------------------------------------------------------------- errors


def test_missing_step_names_available(tmp_path):
    state = _state(OPTIMIZERS["sgd_momentum"])
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        with pytest.raises(FileNotFoundError, match="available steps: none"):
            ck.restore(3, state)
        ck.save(1, state)
        ck.save(2, state)
        with pytest.raises(FileNotFoundError, match=r"step 3 .*available steps: \[1, 2\]"):
            ck.restore(3, state)
        with pytest.raises(FileNotFoundError, match="no rewind point at step 0"):
            ck.restore_rewind_point(0, state)


def test_structure_mismatch_is_clear(tmp_path):
    tx = OPTIMIZERS["sgd_momentum"]
    state = _state(tx)
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(1, state)
        other_opt = _state(OPTIMIZERS["adam_schedule"])
        with pytest.raises(ValueError, match="does not match the restore target") as err:
            ck.restore(1, other_opt)
        assert "opt_state" in str(err.value)
        wider = state.replace(params={**state.params, "Dense_0": {"kernel": jnp.zeros((6, 7)), "bias": jnp.zeros(7)}})
        with pytest.raises(ValueError, match=r"params/Dense_0/kernel': checkpoint \(6, 5\), target \(6, 7\)"):
            ck.restore(1, wider)


# ----------------------------------------------------------------------------- config


def test_config_hash_stable():
    assert ckpts.config_hash(Cfg()) == ckpts.config_hash(dataclasses.asdict(Cfg()))
    assert ckpts.config_hash({"a": 1, "b": (1, 2)}) == ckpts.config_hash({"b": [1, 2], "a": 1})
    assert ckpts.config_hash(Cfg(lr=0.2)) != ckpts.config_hash(Cfg())
    h = ckpts.config_hash(Cfg())
    assert len(h) == 12 and int(h, 16) >= 0


def test_config_json_written(tmp_path):
    ckpts.RunCheckpoints(tmp_path / "run", Cfg()).close()
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    assert data["config"] == {"model": "lenet_300_100", "lr": 0.1, "sizes": [300, 100], "seeds": 1}
    assert data["config_hash"] == ckpts.config_hash(Cfg())


def test_config_mismatch_refused_then_overwrite(tmp_path):
    tx = OPTIMIZERS["sgd_momentum"]
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(5, _state(tx))
        ck.save_rewind_point(0, _state(tx))
    with pytest.raises(ckpts.ConfigMismatchError) as err:
        ckpts.RunCheckpoints(tmp_path / "run", Cfg(lr=0.05))
    msg = str(err.value)
    assert "lr" in msg and "0.1" in msg and "0.05" in msg
    assert "overwrite the old run" in msg and "new directory" in msg
    assert "model" not in msg  # only the differing keys
    # refused: nothing changed
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["lr"] == 0.1
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg(lr=0.05), overwrite=True) as ck:
        assert ck.latest_step() is None and ck.rewind_steps() == []
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["lr"] == 0.05
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg(lr=0.05)) as ck:  # same config resumes
        assert ck.latest_step() is None


def test_a_field_added_after_saving_resumes_at_its_default(tmp_path):
    """A run saved before a config field existed resumes if the new config holds that
    field at its default, and keeps its saved identity; any other value is refused."""

    @dataclasses.dataclass(frozen=True)
    class Newer(Cfg):
        momentum: float = 0.9

    from jaxticket import rundir

    key = "test_settings_with_momentum"  # an identity key of this test's own
    saved = ckpts.RunCheckpoints(tmp_path / "run", {key: Cfg()})
    old_hash = saved.config_hash
    saved.close()
    with pytest.raises(ckpts.ConfigMismatchError, match="momentum"):  # no upgrade registered: refused
        ckpts.RunCheckpoints(tmp_path / "run", {key: Newer()})
    rundir.register_upgrade(key, lambda d: {"momentum": 0.9, **d})  # what an older layout meant
    with ckpts.RunCheckpoints(tmp_path / "run", {key: Newer()}) as ck:
        assert ck.config_hash == old_hash
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["config_hash"] == old_hash and stored["config"][key]["momentum"] == 0.9  # recorded upgraded
    with pytest.raises(ckpts.ConfigMismatchError, match="momentum"):  # not what the old layout meant: refused
        ckpts.RunCheckpoints(tmp_path / "run", {key: Newer(momentum=0.5)})
    with pytest.raises(ckpts.ConfigMismatchError, match="lr"):  # the upgrade does not excuse other keys
        ckpts.RunCheckpoints(tmp_path / "run", {key: Newer(lr=0.2)})


def test_config_json_atomic_on_failed_serialisation(tmp_path):
    ckpts.RunCheckpoints(tmp_path / "run", Cfg()).close()
    before = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(TypeError, match="lr"):
        ckpts.RunCheckpoints(tmp_path / "run", Cfg(lr=object()), overwrite=True)
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    assert [p.name for p in (tmp_path / "run").iterdir() if p.is_file()] == ["config.json"]


def test_config_json_atomic_on_failed_write(tmp_path, monkeypatch):
    ckpts.RunCheckpoints(tmp_path / "run", Cfg()).close()
    before = (tmp_path / "run" / "config.json").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(rundir.files.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        ckpts.RunCheckpoints(tmp_path / "run", Cfg(lr=0.3), overwrite=True)
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    assert [p.name for p in (tmp_path / "run").iterdir() if p.is_file()] == ["config.json"]


# ----------------------------------------------------------------------------- subprocesses


def _run_python(code, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(kwargs.pop("env", {}))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, **kwargs)


SAVER = """
import sys, jax, jax.numpy as jnp
from jaxticket import checkpoints, masks
run_dir = sys.argv[1] if len(sys.argv) > 1 else {run_dir!r}
def state(step):
    params = {{"w": jnp.full((512, 1024), step, jnp.float32), "b": jnp.full((7,), step, jnp.bfloat16)}}
    return {{"step": jnp.asarray(step), "params": params, "mask": masks.ones_like(params),
            "rng": jax.random.split(jax.random.key(step), 4)}}
ck = checkpoints.RunCheckpoints(run_dir, {{"name": "kill"}}, keep_last=2)
start = (ck.latest_step() or 0) + 1
for step in range(start, start + 10000):
    ck.save(step, state(step))
    print(step, flush=True)
"""


def _restore_target():
    target = {
        "step": jnp.asarray(0),
        "params": {"w": jnp.zeros((512, 1024)), "b": jnp.zeros((7,), jnp.bfloat16)},
        "rng": jax.random.split(jax.random.key(0), 4),
    }
    target["mask"] = masks.ones_like(target["params"])
    return target


def test_kill_mid_save_is_resumable(tmp_path):
    """SIGKILL a real saver while orbax's temporary directory exists; resume twice."""
    run_dir = tmp_path / "run"
    periodic = run_dir / "checkpoints"
    for delay in (0.0, 0.02):  # kill as the save starts, and a little into the write
        proc = _run_python(SAVER.format(run_dir=str(run_dir)), stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()
            assert first.strip(), "saver produced no checkpoint"
            deadline, in_flight = time.time() + 30, False
            while not in_flight and time.time() < deadline:
                in_flight = periodic.exists() and any("tmp" in p.name for p in periodic.iterdir())
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert in_flight, "never saw a save in flight"
        with ckpts.RunCheckpoints(run_dir, {"name": "kill"}, keep_last=2) as ck:
            latest = ck.latest_step()
            assert latest is not None and latest >= int(first)
            restored = ck.restore(latest, _restore_target())
            assert int(restored["step"]) == latest
            assert float(restored["params"]["w"][-1, -1]) == latest
            assert float(restored["params"]["b"][0]) == latest
            np.testing.assert_array_equal(
                jax.random.key_data(restored["rng"]),
                jax.random.key_data(jax.random.split(jax.random.key(latest), 4)),
            )
            for step in ck.steps():  # every reported step is complete
                assert int(ck.restore(step, _restore_target())["step"]) == step
    # the resumed manager cleaned up the killed save's temporary directory
    names = [p.name for p in periodic.iterdir()]
    assert all(n.isdigit() or n.startswith(".") for n in names), names


def test_leftovers_are_not_reported(tmp_path):
    """Temporary (uncommitted) and trashed step directories are never 'complete' steps."""
    tx = OPTIMIZERS["sgd_momentum"]
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(4, _state(tx, step=4))
    periodic = tmp_path / "run" / "checkpoints"
    (periodic / "9.orbax-checkpoint-tmp" / "default").mkdir(parents=True)
    (periodic / ".trash" / "2").mkdir(parents=True)
    (tmp_path / "run" / ".config.json.abc.tmp").write_text('{"config": {"half')
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        assert ck.latest_step() == 4 and ck.steps() == [4]
        with pytest.raises(FileNotFoundError, match=r"available steps: \[4\]"):
            ck.restore(9, _state(tx))
        ck.save(5, _state(tx, step=5))
        assert ck.steps() == [4, 5]
    assert not (tmp_path / "run" / ".config.json.abc.tmp").exists()


SHARDED = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxticket import checkpoints, masks
mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("seeds", "model"))
def put(x, spec):
    return jax.device_put(x, NamedSharding(mesh, spec))
state = {
    "w": put(jnp.arange(8 * 6 * 4, dtype=jnp.float32).reshape(8, 6, 4), P("seeds", None, "model")),
    "b": put(jnp.arange(8 * 4).reshape(8, 4).astype(jnp.bfloat16), P("seeds")),
    "rng": put(jax.random.split(jax.random.key(0), 8), P("seeds")),
    "step": put(jnp.asarray(3), P()),
}
state["mask"] = masks.ones_like({"w": state["w"]})
with checkpoints.RunCheckpoints(sys.argv[1], {"mesh": [4, 2]}) as ck:
    ck.save(3, state)
    # restore into a *different* sharding via ShapeDtypeStructs
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P())), state)
    target["w"] = jax.ShapeDtypeStruct((8, 6, 4), jnp.float32, sharding=NamedSharding(mesh, P(None, "model")))
    target["rng"] = jax.ShapeDtypeStruct((8,), state["rng"].dtype, sharding=NamedSharding(mesh, P("seeds")))
    r = ck.restore(3, target)
for name in ("w", "b", "step"):
    assert r[name].sharding == target[name].sharding, (name, r[name].sharding)
    assert r[name].dtype == state[name].dtype
    np.testing.assert_array_equal(np.asarray(r[name]), np.asarray(state[name]))
assert r["rng"].dtype == state["rng"].dtype
assert r["rng"].sharding.spec == P("seeds"), r["rng"].sharding
np.testing.assert_array_equal(jax.random.key_data(r["rng"]), jax.random.key_data(state["rng"]))
print("OK")
"""


def test_sharded_roundtrip_on_8_fake_devices(tmp_path):
    """NamedSharding over a 4x2 mesh; restore into other shardings (own process: XLA_FLAGS)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run(
        [sys.executable, "-c", SHARDED, str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_checkpoint_from_before_the_schedule_offset_restores_with_offset_zero(tmp_path):
    # A preset's optimizer had an EmptyState where it now keeps StepScheduleState(schedule_offset):
    # run directories written then still resume.
    from jaxticket import train

    params = {"w": jnp.arange(3.0)}
    old = {"params": params, "opt_state": (optax.EmptyState(),)}
    new = {"params": jax.tree.map(jnp.zeros_like, params),
           "opt_state": (train.StepScheduleState(schedule_offset=jnp.int32(5)),)}
    with ckpts.RunCheckpoints(tmp_path / "run", Cfg()) as ck:
        ck.save(3, old)
        restored = ck.restore(3, new)
    np.testing.assert_array_equal(restored["params"]["w"], params["w"])
    assert int(restored["opt_state"][0].schedule_offset) == 5  # the target's value: a fresh state's 0
    with ckpts.RunCheckpoints(tmp_path / "run2", Cfg()) as ck:  # any other missing leaf is still an error
        ck.save(3, {"params": params})
        with pytest.raises(ValueError, match="in the target but not in the checkpoint"):
            ck.restore(3, {"params": params, "extra": jnp.zeros(2)})
