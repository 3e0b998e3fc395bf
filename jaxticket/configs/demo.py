"""The offline quick start: IMP on the embedded 8x8 ``digits`` (no download)."""

from jaxticket.configs.registry import preset
from jaxticket.lottery import LotteryConfig

# Not from a paper: sized so that `jaxticket demo` (IMP + a random-mask baseline + table
# + plots) finishes in well under 2 minutes on 2 CPU cores, compile times included.
# digits has 1,437 training images; 237 are held out so that early stopping has a
# validation loss and 1,200 remain (20 batches of 60: 300 steps = 15 epochs).
DEMO_STEPS = 300
DEMO_VALIDATION = 237
DEMO_LEVELS = 5
DEMO_RATE = 0.5  # per level: 0.5 ** 5 = 3.1% of weights at the last level


@preset(source="jaxticket (sized for a 2-core CPU); LeNet-300-100 and Adam as in Frankle & Carbin 2019",
        expected="measured on 2 CPU cores (2 seeds): IMP ~98% test accuracy down to 12.5% of "
                 "weights, ~95% at 3.1%; the random-mask baseline ~96% at 12.5%, ~89% at 3.1%; "
                 "about 35 s end to end")
def demo() -> LotteryConfig:
    """Offline quick start: LeNet-300-100 on 8x8 digits, 5 levels of global 50% pruning, 2 seeds.

    Adam 1.2e-3, batch 60, 300 steps per level, rewind to init; `jaxticket demo` adds a
    random-mask baseline and writes the table and plots.
    """
    return LotteryConfig.of(
        model="lenet_300_100", dataset="digits", input_shape=(8, 8, 1),
        optimizer="adam", lr=1.2e-3, batch_size=60, steps=DEMO_STEPS,
        eval_every=25,
        levels=DEMO_LEVELS,
        pruner={"method": "magnitude", "fraction": DEMO_RATE, "scope": "global"},
        rewind_step=0,
        seeds=2,
        validation_size=DEMO_VALIDATION,
    )
