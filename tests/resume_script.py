"""A tiny training run for tests/test_resume.py, killed and restarted from outside.

    python tests/resume_script.py RUN_DIR OUT.npz [--no-checkpoints]

Trains LeNet (32-16) on random 8x8 data with momentum, weight decay, augmentation and a
50% random mask, checkpointing every 20 steps into RUN_DIR (resuming from it when it
holds a checkpoint), and writes the final params and step to OUT.npz.
"""

import sys

STEPS, EVERY = 600, 20


def main(run_dir, out_path, use_checkpoints=True):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxticket import masks, train
    from jaxticket.checkpoints import RunCheckpoints
    from jaxticket.data import ArrayDataset

    rng = np.random.default_rng(0)
    n = 256
    images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = images.reshape(n, -1)[:, :4].argmax(1).astype(np.int32)
    ds = ArrayDataset(jnp.asarray(images), jnp.asarray(labels), "mnist", 10, (0.5,), (0.25,))
    config = train.TrainConfig(model="lenet_32_16", input_shape=(8, 8, 1), lr=0.05, momentum=0.9,
                               weight_decay=5e-4, batch_size=16, steps=STEPS, chunk_size=10,
                               checkpoint_every=EVERY, eval_every=100, augment=True)
    state = train.init_state(config)
    keep = jax.tree.map(lambda k, f: jax.random.bernoulli(jax.random.key(7), 0.5, k.shape) if f else k,
                        state.mask.keep, jax.tree.unflatten(jax.tree.structure(state.mask.keep),
                                                            list(state.mask.prunable)))
    state = train.init_state(config, mask=state.mask.replace(keep=keep))
    ckpt = RunCheckpoints(run_dir, config) if use_checkpoints else None
    result = train.fit(config, state, ds, val_ds=ds, checkpoints=ckpt, rewind_step=33,
                       metrics_path=f"{run_dir}/metrics.jsonl" if use_checkpoints else None,
                       progress=False)
    if ckpt is not None:
        ckpt.close()
    leaves = jax.tree.leaves(result.state.params) + jax.tree.leaves(result.rewind_state.params)
    np.savez(out_path, step=int(result.state.step), rewind_step=int(result.rewind_state.step),
             **{f"p{i}": np.asarray(x) for i, x in enumerate(leaves)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--no-checkpoints" not in sys.argv)
