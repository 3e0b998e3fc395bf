"""The ``--quick`` paths of the experiment scripts on tiny data (each well under 20 s of CPU).

Each script's data loader (its module-level ``load_data``) is replaced by tiny random
arrays of the real dataset's shape, and the sizes of its quick setting are shrunk through
the script's own ``QUICK`` settings (the code path is the quick one; the real path is
unchanged). Each test checks that the tidy results, the summary and the plots are
written and hold what the script promises, and that ``--from-csv`` rewrites the summary
from the CSV files alone. The shell scripts are run against a stand-in ``jaxticket`` that
records its arguments, which the real command-line parser must accept.
"""

import csv
import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys

import numpy as np
import pytest

from jaxticket import data as data_lib
from jaxticket import lottery

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_images(n_train=128, n_test=64, shape=(28, 28, 1), validation_size=0, seed=0):
    """Random images labelled by the brightest of the first ten pixels (learnable a little)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, *shape)).astype(np.float32)
    y = (x.reshape(len(x), -1)[:, :10].argmax(1)).astype(np.int32)
    return data_lib.from_arrays(train=(x[:n_train], y[:n_train]), test=(x[n_train:], y[n_train:]),
                                validation_size=validation_size)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_summary(out: pathlib.Path) -> str:
    """Deletes ``summary.md`` and returns what it held (so ``--from-csv`` must write it again)."""
    text = (out / "summary.md").read_text()
    (out / "summary.md").unlink()
    return text


def paganini(monkeypatch, levels: int = 1):
    script = load_script("paganini_forde_lenet5")
    monkeypatch.setattr(script, "load_data", lambda config, args: tiny_images())
    monkeypatch.setattr(script, "TRAIN_EXAMPLES", 128)  # 2 steps of 64 per epoch
    monkeypatch.setattr(script, "QUICK", {**script.QUICK, "levels": levels, "methods": ["l1_unstructured"]})
    return script


def test_paganini_forde_lenet5_quick(tmp_path, monkeypatch):
    script = paganini(monkeypatch)
    root, out = tmp_path / "runs", tmp_path / "out"
    assert script.main(["--quick", "--root", str(root), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(script.FIELDS) and {r["epochs"] for r in rows} == {"1"}
    assert len(rows) == 2 * 2  # levels 0-1 x seeds
    conn = read_csv(out / "connectivity.csv")
    assert len(conn) == 2 * 3  # seeds x layers
    for r in conn:  # a live input is an input, so the live figures are defined and fractions
        assert int(r["live_inputs"]) >= 1 and 0 <= float(r["empty_inputs_live"]) <= 1
    summary = (out / "summary.md").read_text()
    assert "## Accuracy per method" in summary and "## Connectivity at iteration 1" in summary
    # one method: no pair to match in density, and its "ensembles" would be the method itself
    assert "## At matched density" not in summary and "## Ensembles" not in summary
    for png in ("accuracy_vs_density.png", "conv1_filters.png", "conv2_weights_l1_unstructured.png"):
        assert (out / png).exists(), png
    text = without_summary(out)
    assert script.main(["--quick", "--out", str(out), "--from-csv"]) == 0
    assert (out / "summary.md").read_text() == text


def test_paganini_forde_lenet5_more_seeds_later(tmp_path, monkeypatch):
    # seeds 1-2 trained later in a folder of their own: seed 1 there is seed 1 of the
    # two-seed folder, bit for bit, and the results read both folders
    script = paganini(monkeypatch, levels=0)
    root, out = tmp_path / "runs", tmp_path / "out"
    argv = ["--quick", "--root", str(root), "--out", str(out)]
    assert script.main(argv) == 0
    assert script.main(argv + ["--first-seed", "1"]) == 0
    later = [r for r in lottery.load_results(root / "l1_unstructured_seeds1-2") if r["kind"] == "imp"]
    by_seed = {(int(r["level"]), int(r["seed"])): float(r["test_accuracy"]) for r in read_csv(out / "results.csv")}
    assert sorted(by_seed) == [(0, 0), (0, 1), (0, 2)]  # seed 1 once, from the first folder
    assert [r["final_test_accuracy"] for r in later if r["seed"] == 0] == [by_seed[(0, 1)]]
    summary = root / "l1_unstructured_seeds1-2" / "levels" / "level_00" / "summary.json"
    before = summary.stat().st_mtime_ns
    assert script.main(argv + ["--first-seed", "1"]) == 0  # the same command again trains nothing
    assert summary.stat().st_mtime_ns == before
    # the first folder gone (seed 0's rows live on in a results folder): the report reads seeds 1-2
    # and draws its per-seed figures from seed 1
    (root / "l1_unstructured").rename(tmp_path / "gone")
    out2 = tmp_path / "out2"
    assert script.main(["--quick", "--root", str(root), "--out", str(out2), "--report"]) == 0
    assert sorted({r["seed"] for r in read_csv(out2 / "results.csv")}) == ["1", "2"]
    assert (out2 / "conv1_filters.png").exists()


def test_one_seed_has_no_interval():
    common = load_script("common")
    one, two = common.stats([0.9]), common.stats([0.9, 0.8])
    assert common.fmt(one) == "90.00 (one seed: no interval)" and "[" in common.fmt(two)
    assert common.fmt_paired(one) == "+90.00 (one seed: no interval)"


def test_frankle_carbin_lenet_quick(tmp_path, monkeypatch):
    script = load_script("frankle_carbin_lenet")
    monkeypatch.setattr(script, "load_data", lambda config, args: tiny_images(shape=(28, 28, 1), validation_size=32))
    monkeypatch.setattr(script, "QUICK", {"seeds": 2, "levels": 1, "steps": 100, "control_levels": [1]})
    work, out = tmp_path / "run", tmp_path / "out"
    argv = ["--quick", "--workdir", str(work), "--out", str(out)]
    assert script.main(argv) == 0
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(script.FIELDS)
    assert sorted({(r["kind"], r["level"]) for r in rows}) == [("random_mask", "1"), ("reinit", "1"), ("ticket", "0"),
                                                             ("ticket", "1")]
    assert all(r["early_stop_step"] == "100" for r in rows)  # one evaluation, at step 100
    assert "## Paired by seed" in (out / "summary.md").read_text()
    assert (out / "accuracy_vs_density.png").exists() and (out / "early_stop_vs_density.png").exists()
    text = without_summary(out)
    assert script.main(["--quick", "--out", str(out), "--from-csv"]) == 0
    assert (out / "summary.md").read_text() == text  # the CSV holds everything the summary says


def test_pruning_at_init_quick(tmp_path, monkeypatch):
    script = load_script("pruning_at_init")
    monkeypatch.setattr(script, "load_data", lambda config, args: tiny_images())
    monkeypatch.setattr(script, "QUICK", {"steps": 10, "levels": 1, "branch_levels": [1], "rewind_step": 2})
    monkeypatch.setattr(script, "METHODS", ("magnitude", "random"))  # the scored ones compile for long
    work, out = tmp_path / "run", tmp_path / "out"
    assert script.main(["--quick", "--setups", "lenet_300_100_mnist", "--seeds", "2", "--lineages", "k0",
                        "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    kinds = {(r["method"], r["check"]) for r in rows if r["level"] == "1"}
    assert kinds == {("imp", "none"), ("imp", "shuffle"), ("imp", "reinit"), ("random", "none")} | {
        ("magnitude", c) for c in script.CHECKS}
    densities = {r["density"] for r in rows if r["level"] == "1"}
    assert len(densities) == 1  # every method pruned to the IMP mask's density
    assert (out / "accuracy_vs_density_lenet_300_100_mnist.png").exists()
    text = without_summary(out)
    assert script.main(["--quick", "--setups", "lenet_300_100_mnist", "--out", str(out), "--from-csv"]) == 0
    assert (out / "summary.md").read_text() == text


def test_aligned_connectivity_quick(tmp_path, monkeypatch):
    script = load_script("aligned_connectivity")
    monkeypatch.setattr(script, "load_data", lambda config, args: tiny_images())
    monkeypatch.setattr(script, "QUICK", {"steps": 20, "pairs": 1, "seeds": 1, "levels": 1, "train_examples": 64})
    work, out = tmp_path / "run", tmp_path / "out"
    assert script.main(["--quick", "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    assert [(r["pair"], r["aligned"]) for r in rows] == [("independent", "False"), ("independent", "True"),
                                                          ("imp_0_1", "False"), ("imp_0_1", "True")]
    assert all(float(r["test_barrier"]) >= -1e-6 for r in rows)  # the path's max is at least its ends' mean
    assert (out / "barriers.png").exists()
    text = without_summary(out)
    assert script.main(["--quick", "--out", str(out), "--from-csv"]) == 0
    assert (out / "summary.md").read_text() == text


def test_rewinding_stability_quick(tmp_path, monkeypatch):
    script = load_script("rewinding_stability")
    monkeypatch.setattr(script, "load_data", lambda config, args: tiny_images())
    monkeypatch.setattr(script, "QUICK", {"steps": 8, "levels": 1, "ks": [0, 2], "copy_levels": [0, 1], "seeds": 1,
                                          "train_examples": 64})
    work, out = tmp_path / "run", tmp_path / "out"
    assert script.main(["--quick", "--workdir", str(work), "--out", str(out)]) == 0
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(script.FIELDS) and len(rows) == 2 * 2  # ks x levels, one seed
    for r in rows:
        survived, every = float(r["l2_to_full"]), float(r["l2_to_full_all"])
        if r["level"] == "0":  # a dense copy: every parameter survives... but biases count only in the second
            assert survived <= every
        else:  # pruned positions (0 in the copy) and biases add to the second
            assert survived < every
    for png in ("accuracy_vs_density.png", "barrier_vs_k.png", "l2_vs_k.png", "l2_all_vs_k.png"):
        assert (out / png).exists(), png
    shared = read_csv(out / "common_mask.csv")  # level 1, k = 0 and 2: over the weights both lineages keep
    assert sorted((r["k"], r["level"]) for r in shared) == [("0", "1"), ("2", "1")]
    by_k = {r["k"]: r for r in shared}
    assert float(by_k["0"]["jaccard_to_first_k"]) == 1.0 and 0 < float(by_k["2"]["jaccard_to_first_k"]) <= 1
    own = {r["k"]: float(r["l2_to_full"]) for r in rows if r["level"] == "1"}
    for k, r in by_k.items():
        assert float(r["common_density"]) <= float(r["density"])
        assert float(r["l2_to_full_common"]) <= float(r["l2_to_full"]) == pytest.approx(own[k], rel=1e-6)
    assert "kept by every k" in (out / "summary.md").read_text()
    text = without_summary(out)
    assert script.main(["--quick", "--out", str(out), "--from-csv"]) == 0
    assert (out / "summary.md").read_text() == text
    # rows merged from an older run (k = 2 without the surviving-weight distance): its table cells are "-"
    merged = [r | {"l2_to_full": ""} if r["k"] == "2" else r for r in rows]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=script.FIELDS)
        w.writeheader(), w.writerows(merged)
    (out / "l2_vs_k.png").unlink()
    assert script.main(["--quick", "--out", str(out), "--from-csv"]) == 0
    assert (out / "l2_vs_k.png").exists()
    cells = [line.split(" | ") for line in (out / "summary.md").read_text().splitlines() if line.startswith("| 2 |")]
    assert cells and all(c[-2] == "-" and c[-1] != "-" for c in cells)
    # an old results.csv (its l2_to_full held the every-parameter distance) is read as such
    old = [{k: v for k, v in r.items() if k != "l2_to_full_all"} | {"l2_to_full": r["l2_to_full_all"]} for r in rows]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in script.FIELDS if k != "l2_to_full_all"])
        w.writeheader(), w.writerows(old)
    back = script.read_csv(out / "results.csv")
    assert all(r["l2_to_full"] is None for r in back)
    assert [r["l2_to_full_all"] for r in back] == [float(r["l2_to_full_all"]) for r in rows]


# ----------------------------------------------------------------------------- shell scripts

STAND_IN = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["JAXTICKET_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.mark.parametrize("name", ["lenet_mnist_lottery", "instability_lenet_mnist", "which_ticket_lenet_mnist"])
def test_shell_scripts_call_the_command_with_options_it_accepts(tmp_path, name):
    from jaxticket import cli

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "jaxticket").write_text(STAND_IN)
    (bin_dir / "jaxticket").chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "JAXTICKET_CALLS": str(calls),
           "MANUAL_DIR": str(tmp_path / "mnist"), "WORKDIR": str(tmp_path / "run"), "ROOT": str(tmp_path / "root")}
    subprocess.run(["bash", str(EXPERIMENTS / f"{name}.sh")], env=env, check=True, cwd=tmp_path)
    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert argvs, f"{name}.sh called nothing"
    parser = cli.build_parser()
    for argv in argvs:
        args = parser.parse_args(argv)  # exits (a test failure) on an option the command does not know
        for item in getattr(args, "set", None) or []:  # --set key=JSON values are JSON
            json.loads(item.split("=", 1)[1])
    assert any(shlex.join(a).startswith(("imp ", "instability ")) for a in argvs)
