"""Named presets that reproduce the papers' settings, as plain data.

Every preset is a function returning a :class:`jaxticket.lottery.LotteryConfig`, whose
docstring says what it reproduces; its source and expected result are registered with
it, and every number is documented where it is defined (``lenet.py``, ``conv.py``,
``cifar.py``, ``imagenet.py``, ``demo.py``).

Example::

    from jaxticket import configs, lottery

    configs.names()                      # ['conv2_cifar10', ..., 'demo', ...]
    print(configs.describe("lenet_300_100_mnist"))
    config = configs.get("demo").replace(levels=2)
    lottery.run_imp(config, "runs/demo")

The same from the shell: ``jaxticket configs``, ``jaxticket imp --config demo``.
"""

from jaxticket.configs.registry import PRESETS, Preset, describe, get, lookup, names, preset
from jaxticket.configs import cifar, conv, demo, imagenet, lenet  # noqa: F401  (registers)

__all__ = ["PRESETS", "Preset", "describe", "get", "lookup", "names", "preset"]
