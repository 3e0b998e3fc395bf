"""The shared registry (jaxticket.registry) and the one error for an unknown name, in every registry."""

import pytest

from jaxticket import configs, data, models, pruning
from jaxticket.registry import Registry, UnknownNameError


def test_register_get_names_contains():
    r = Registry("colour", hint="your own: colours.register(name, rgb)")
    assert r.register("red", (255, 0, 0)) == (255, 0, 0)
    r.register("green", (0, 255, 0))
    assert r.get("red") == (255, 0, 0) and r["green"] == (0, 255, 0)
    assert r.names() == ("green", "red") and list(r) == ["green", "red"] and len(r) == 2
    assert "red" in r and "blue" not in r and ["unhashable"] not in r
    assert r.get("blue", None) is None
    r.register("red", (255, 0, 0))  # the same (equal) object again: fine
    with pytest.raises(ValueError, match=r"^colour 'red' is registered already; pass overwrite=True to replace it$"):
        r.register("red", (200, 0, 0))
    assert r.register("red", (200, 0, 0), overwrite=True) == r.get("red") == (200, 0, 0)
    with pytest.raises(ValueError, match="a colour name is a non-empty string"):
        r.register("", 1)
    assert r.pop("green") == (0, 255, 0) and r.names() == ("red",)


def test_unknown_name_is_one_line_with_the_closest_and_all_names():
    r = Registry("colour", hint="your own: colours.register(name, rgb).")
    for name in ("red", "green", "blue"):
        r.register(name, name)
    with pytest.raises(UnknownNameError) as e:
        r.get("gren")
    assert str(e.value) == ("unknown colour 'gren' (did you mean 'green'?); valid colours: blue, green, red; "
                            "your own: colours.register(name, rgb).")
    assert (e.value.kind, e.value.name, e.value.suggestion, e.value.valid) == ("colour", "gren", "green",
                                                                             ("blue", "green", "red"))
    assert isinstance(e.value, ValueError)
    with pytest.raises(UnknownNameError, match=r"^unknown colour 'zzz'; valid colours: blue, green, red; your own"):
        r["zzz"]
    with pytest.raises(UnknownNameError, match=r"^unknown colour \['x'\]; valid"):
        r.get(["x"])  # not even a string: still the one error
    err = r.unknown("teal", reason="not a primary colour", valid=["blue", "green", "red", "teal_blue"])
    assert str(err).startswith("unknown colour 'teal': not a primary colour (did you mean 'teal_blue'?); valid "
                               "colours: blue, green, red, teal_blue;")
    assert str(Registry("thing", plural="things here").unknown("x")) == "unknown thing 'x'; valid things here: (none registered)."


def test_monkeypatch_setitem_adds_an_entry_for_one_test(monkeypatch):
    r = Registry("colour")
    r.register("red", 1)
    with monkeypatch.context() as m:
        m.setitem(r, "blue", 2)
        m.setitem(r, "red", 3)
        assert (r.get("blue"), r.get("red")) == (2, 3)
    assert r.names() == ("red",) and r.get("red") == 1


@pytest.mark.parametrize("lookup, kind, plural, typo, closest", [
    (lambda n: pruning.from_config({"method": n, "fraction": 0.2}), "pruning method", "pruning methods",
     "magnitud", "magnitude"),
    (lambda n: pruning.get(n), "pruning method", "pruning methods", "snipp", "snip"),
    (models.get, "model", "models", "resnt20", "resnet20"),
    (models.input_shape, "model", "models", "lenet_300", None),  # a family's name: lenet_300 is a model
    (data.get_spec, "dataset", "datasets", "mnits", "mnist"),
    (data.load, "dataset", "datasets", "cifar_10", "cifar10"),
    (configs.lookup, "preset", "presets", "lenet_300_100_mnst", "lenet_300_100_mnist"),
    (configs.get, "preset", "presets", "dem", "demo"),
])
def test_every_registry_says_unknown_names_alike(lookup, kind, plural, typo, closest):
    registry, names = {"pruning method": (pruning.METHODS, pruning.methods()), "model": (models.MODELS, models.names()),
                       "dataset": (data.DATASETS, data.list_datasets()),
                       "preset": (configs.PRESETS, configs.names())}[kind]
    assert isinstance(registry, Registry)
    if closest is None:  # a parametric name that exists
        lookup(typo)
        return
    with pytest.raises(UnknownNameError) as e:
        lookup(typo)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"unknown {kind} {typo!r} (did you mean {closest!r}?); valid {plural}: ")
    assert f"valid {plural}: {', '.join(names)}" in msg
    assert e.value.suggestion == closest and e.value.valid == tuple(names)


def test_the_old_names_of_each_registry_still_work():
    assert pruning.methods() == pruning.METHODS.names() and "magnitude" in pruning.METHODS
    assert data.list_datasets() == data.DATASETS.names() and data.get_spec("mnist") is data.DATASETS.get("mnist")
    assert models.names() == sorted(models.names()) and "resnet20" in models.names() and "lenet5" in models.MODELS
    assert configs.names() == list(configs.PRESETS.names()) and configs.lookup("demo") is configs.PRESETS.get("demo")
    from jaxticket.pruning import core
    assert core._REGISTRY is pruning.METHODS  # the name tests patch entries through
