"""Conv-2/4/6 on CIFAR-10 (Frankle & Carbin 2019)."""

from jaxticket.configs.registry import preset
from jaxticket.lottery import LotteryConfig

# Frankle & Carbin 2019, Figure 2 (architectures and hyperparameters): Adam, batch 60;
#              lr      iterations   conv rate  fc rate  output rate
#   Conv-2   2e-4      20K          10%        20%      10%
#   Conv-4   3e-4      25K          10%        20%      10%
#   Conv-6   3e-4      30K          15%        20%      10%
# no augmentation, no dropout in the main experiments, 5K validation images (early
# stopping), evaluation every 100 iterations. 20 levels as for LeNet.
_CONV = {
    # name: (lr, steps, conv rate)
    "conv2": (2e-4, 20_000, 0.10),
    "conv4": (3e-4, 25_000, 0.10),
    "conv6": (3e-4, 30_000, 0.15),
}
FC_CONV_BATCH = 60
FC_FC_RATE = 0.2
FC_OUTPUT_RATE = 0.1
FC_VALIDATION = 5000
FC_EVAL_EVERY = 100
FC_CONV_LEVELS = 20


def conv_pruner(conv_rate: float) -> dict:
    """F&C's layer-wise rates: conv ``conv_rate``, fc 20%, output 10% per level."""
    return {"method": "partition", "rules": [
        ["^output/kernel$", {"method": "magnitude", "fraction": FC_OUTPUT_RATE}],
        ["^fc[^/]*/kernel$", {"method": "magnitude", "fraction": FC_FC_RATE}],
        ["^conv[^/]*/kernel$", {"method": "magnitude", "fraction": conv_rate}],
    ]}


def _conv_cifar10(model: str) -> LotteryConfig:
    lr, steps, conv_rate = _CONV[model]
    return LotteryConfig.of(
        model=model, dataset="cifar10", optimizer="adam", lr=lr,
        batch_size=FC_CONV_BATCH, steps=steps, eval_every=FC_EVAL_EVERY,
        levels=FC_CONV_LEVELS,
        pruner=conv_pruner(conv_rate),
        rewind_step=0,
        validation_size=FC_VALIDATION,
    )


_SOURCE = "Frankle & Carbin 2019 (arXiv:1803.03635), Figure 2 (architectures and hyperparameters)"
_EXPECTED = ("F&C Section 3: tickets beat the dense network's test accuracy by a few points "
             "at roughly 10-20% of weights and early-stop sooner; reinit does not (exact "
             "numbers not pinned here)")


@preset(source=_SOURCE, expected=_EXPECTED)
def conv2_cifar10() -> LotteryConfig:
    """Conv-2 on CIFAR-10: Adam 2e-4, batch 60, 20K iterations; prune conv 10%, fc 20%, output 10%."""
    return _conv_cifar10("conv2")


@preset(source=_SOURCE, expected=_EXPECTED)
def conv4_cifar10() -> LotteryConfig:
    """Conv-4 on CIFAR-10: Adam 3e-4, batch 60, 25K iterations; prune conv 10%, fc 20%, output 10%."""
    return _conv_cifar10("conv4")


@preset(source=_SOURCE, expected=_EXPECTED)
def conv6_cifar10() -> LotteryConfig:
    """Conv-6 on CIFAR-10: Adam 3e-4, batch 60, 30K iterations; prune conv 15%, fc 20%, output 10%."""
    return _conv_cifar10("conv6")
