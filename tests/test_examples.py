"""The notebooks under examples/ run top to bottom; a failing cell fails the test."""

import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_two_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"bring_your_own.ipynb", "instability_vmapped_seeds.ipynb", "nnx_lottery.ipynb"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.monotonic()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on a failing cell
    elapsed = time.monotonic() - t0
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert list(tmp_path.glob("*.png")), "the notebook's plots were not written"
    assert elapsed < 180, f"{path.name} took {elapsed:.0f} s (budget: 90 s on 2 cores)"
