"""`jaxticket instability` and `jaxticket compare` through the command's main()."""

import json

from jaxticket import cli

TINY = ["--config", "demo", "--steps", "40", "--seeds", "1", "--no-progress", "--set", "chunk_size=20"]


def test_instability_command(tmp_path, capsys):
    workdir = tmp_path / "inst"
    code = cli.main(["instability", *TINY, "--seeds", "2", "--ks", "0", "10", "--levels", "0", "1", "--alphas", "4",
                     "--workdir", str(workdir)])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads((workdir / "results.json").read_text())  # the two seeds trained together
    assert sorted((r["k"], r["level"], r["seed"]) for r in rows) == \
        [(k, level, seed) for k in (0, 10) for level in (0, 1) for seed in (0, 1)]
    assert "test barrier" in out and "seed" in out and "instability_vs_k.png" in out
    assert (workdir / "instability_vs_k.png").exists()


def test_compare_command(tmp_path, capsys):
    dirs = []
    for name, pruner in (("l1", '{"method": "magnitude", "fraction": 0.5}'),
                         ("rand", '{"method": "random", "fraction": 0.5}')):
        d = tmp_path / name
        assert cli.main(["imp", *TINY, "--levels", "1", "--workdir", str(d), "--set", f"pruner={pruner}"]) == 0
        dirs.append(str(d))
    capsys.readouterr()
    out_dir = tmp_path / "cmp"
    assert cli.main(["compare", *dirs, "--out", str(out_dir), "--layer", "fc2/kernel"]) == 0
    out = capsys.readouterr().out
    assert "Mask Jaccard similarity" in out and "Ensembles" in out
    assert (out_dir / "summary.md").exists() and (out_dir / "agreement.png").exists()
    code = cli.main(["compare", dirs[0], str(tmp_path / "missing"), "--out", str(out_dir)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "not an IMP run directory" in err
