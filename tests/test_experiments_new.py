"""The ``--quick`` paths of issue 24's experiment scripts on tiny data (each well under 20 s).

Each script's data loader is replaced by tiny arrays (the real path is unchanged) and the
training shortened with the script's own ``--steps`` option; the test checks that the
tidy results, summary and plots are written and hold what the script promises.
"""

import csv
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from jaxticket import data as data_lib

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_images(n_train=192, n_test=96, shape=(28, 28, 1), seed=0):
    """Random images whose label is the brighter half of the first row (learnable a little)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, *shape)).astype(np.float32)
    y = (x.reshape(len(x), -1)[:, :10].argmax(1)).astype(np.int32)
    return data_lib.from_arrays(train=(x[:n_train], y[:n_train]), test=(x[n_train:], y[n_train:]))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_data_order_distance_quick(tmp_path, monkeypatch):
    script = load_script("data_order_distance")
    monkeypatch.setattr(script, "load_data", lambda config, args: tiny_images())
    out, work = tmp_path / "out", tmp_path / "work"
    assert script.main(["--quick", "--steps", "20", "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    # 2 kinds x 1 copy level x 2 seeds, every distance positive (the copies differ)
    assert len(rows) == 4 and {r["subnetwork"] for r in rows} == {"imp", "random"}
    assert all(float(r["l2_distance"]) > 0 for r in rows)
    assert len({r["density"] for r in rows}) == 1  # both kinds share the per-layer density
    ratios = read_csv(out / "ratios.csv")
    assert len(ratios) == 2
    r = ratios[0]
    assert float(r["ratio_random_over_imp"]) == pytest.approx(float(r["l2_random"]) / float(r["l2_imp"]))
    assert len(read_csv(out / "lineage.csv")) == 2 * 4  # levels 0-3, 2 seeds
    assert (out / "distance_vs_density.png").exists() and (out / "ratio_vs_density.png").exists()
    assert "Random / IMP distance per seed" in (out / "summary.md").read_text()
    assert json.loads((out / "provenance.json").read_text())["settings"]["steps"] == 20
    # a rerun reads every point back and writes the same rows
    before = (out / "results.csv").read_text()
    assert script.main(["--quick", "--steps", "20", "--workdir", str(work), "--out", str(out), "--report"]) == 0
    assert (out / "results.csv").read_text() == before
