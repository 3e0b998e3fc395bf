"""LeNet-300-100 on MNIST: Frankle & Carbin (2019) and open_lth's defaults."""

from jaxticket.configs.registry import preset
from jaxticket.lottery import LotteryConfig

# Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019), Figure 2 (the table of
# architectures and hyperparameters): Adam 1.2e-3, batch 60, 50K iterations, Glorot-normal
# init (the model's default), layer-wise pruning of 20% per round for the hidden layers
# and 10% for the output layer; 5K of the 60K training images held out for validation
# (early stopping = the iteration of minimum validation loss), evaluated every 100
# iterations.
FC_LENET_ADAM_LR = 1.2e-3
FC_LENET_BATCH = 60
FC_LENET_STEPS = 50_000
FC_LENET_HIDDEN_RATE = 0.2
FC_LENET_OUTPUT_RATE = 0.1
FC_VALIDATION = 5000
FC_EVAL_EVERY = 100
# 20 levels. F&C Figure 3 labels its curves Pm = 100, 51.3, 21.1, 7.0, 3.6, 1.9 (%):
# exactly the overall densities of this layer-wise scheme after 0, 3, 7, 12, 15 and 18
# rounds; 20 rounds (1.2%) covers all of them.
FC_LENET_LEVELS = 20

# open_lth models/mnist_lenet.py default_hparams(): SGD lr 0.1 (no momentum), batch 128,
# 40 epochs, sparse_global 20% with the output layer ('fc.weight') ignored, all 60K
# images for training (no validation). open_lth counts ceil(60000/128) = 469 steps per
# epoch; jaxticket's epoch is 60000 // 128 = 468 steps (last partial batch dropped).
OPENLTH_LENET_STEPS = 40 * (60_000 // 128)  # 18,720


@preset(source="Frankle & Carbin 2019 (arXiv:1803.03635), Figure 2 (architectures and hyperparameters); "
               "levels: the densities of Figure 3",
        expected="~98% test accuracy dense (at early stopping); tickets at 51-7% of weights "
                 "match or beat it and early-stop sooner; random reinit degrades below ~20%")
def lenet_300_100_mnist() -> LotteryConfig:
    """LeNet-300-100 on MNIST, the original lottery ticket (reset to init, k = 0).

    Adam 1.2e-3, batch 60, 50K iterations, layer-wise magnitude pruning of 20% per level
    (10% for the output layer), 20 levels, 5K validation images for early stopping.
    """
    return LotteryConfig.of(
        model="lenet_300_100", dataset="mnist", optimizer="adam",
        lr=FC_LENET_ADAM_LR, batch_size=FC_LENET_BATCH, steps=FC_LENET_STEPS,
        eval_every=FC_EVAL_EVERY,
        levels=FC_LENET_LEVELS,
        pruner={"method": "partition", "rules": [
            ["^output/kernel$", {"method": "magnitude", "fraction": FC_LENET_OUTPUT_RATE}],
            ["kernel$", {"method": "magnitude", "fraction": FC_LENET_HIDDEN_RATE}],
        ]},
        rewind_step=0,
        validation_size=FC_VALIDATION,
    )


@preset(source="open_lth models/mnist_lenet.py default_hparams() (facebookresearch/open_lth)",
        expected="~98% test accuracy dense (open_lth's defaults; not pinned here)")
def lenet_300_100_mnist_openlth() -> LotteryConfig:
    """LeNet-300-100 on MNIST with open_lth's defaults (global pruning, output layer kept).

    SGD 0.1, batch 128, 40 epochs on all 60K images, global magnitude pruning of 20% per
    level over the hidden layers (the output layer is not pruned), rewind to init,
    Kaiming-normal (fan-in) kernels as open_lth initialises its models.
    """
    return LotteryConfig.of(
        model="lenet_300_100", dataset="mnist", optimizer="sgd", lr=0.1,
        batch_size=128, steps=OPENLTH_LENET_STEPS, eval_every=468,
        kernel_init="kaiming_normal",  # open_lth models/initializers.py
        levels=FC_LENET_LEVELS,
        pruner={"method": "magnitude", "fraction": 0.2, "scope": "global"},
        prunable=r"^(?!output/).*kernel$",
        rewind_step=0,
        validation_size=0,
    )
