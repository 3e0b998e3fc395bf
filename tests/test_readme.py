"""The README's Python examples run as written, and its commands are CI's."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 3, "the README lost a runnable example"
    first: dict = {}
    exec(compile(blocks[0], str(README), "exec"), first)  # your own model, data and pruner
    run = first["run"]
    assert [round(float(d), 3) for d in run.levels[3].density] == [0.125, 0.125]
    assert run.levels[3].test_accuracy.shape == (2,) and np.all(run.levels[3].test_accuracy > 0.3)
    assert np.allclose(first["controls"][-1].density, 0.125)
    nnx_block = dict(first)
    exec(compile(blocks[1], str(README), "exec"), nnx_block)  # a Flax NNX model, on the first block's data
    assert "ticket" in nnx_block and nnx_block["run"] is not run
    second: dict = {}
    exec(compile(blocks[2], str(README), "exec"), second)  # the mask and pruning API
    assert float(second["jt"].density(second["mask"])) < 0.52


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && python -m pytest -q' in text  # the test command
    assert "python -m pytest -q" in ci and "-e \".[dev]\"" in ci       # is CI's
    assert "pip install -e . && jaxticket demo" in text                 # the demo needs no extras
