"""ResNet-50 on ImageNet (open_lth's defaults)."""

from jaxticket.configs.registry import preset
from jaxticket.lottery import LotteryConfig

# open_lth models/imagenet_resnet.py default_hparams() ("These hyperparameters will reach
# 76.1% top-1 accuracy on ImageNet"): SGD lr 0.4, momentum 0.9, wd 1e-4, batch 1024, 90
# epochs, 5 epochs of linear warmup, lr x0.1 at epochs 30, 60, 80, sparse_global 20%.
IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_BATCH = 1024
STEPS_PER_EPOCH = IMAGENET_TRAIN_IMAGES // IMAGENET_BATCH  # 1251


@preset(source="open_lth models/imagenet_resnet.py default_hparams() (facebookresearch/open_lth); "
               "rewinding needed at this scale: Frankle et al. 2020 (arXiv:1912.05671)",
        expected="76.1% top-1 dense (open_lth). ImageNet streams from the host "
                 "(train.HostStream); `jaxticket instability` does not take streamed data yet")
def resnet50_imagenet() -> LotteryConfig:
    """ResNet-50 on ImageNet (open_lth): SGD 0.4, batch 1024, 90 epochs, 5-epoch warmup, drops at 30/60/80."""
    return LotteryConfig.of(
        model="resnet50", dataset="imagenet2012", optimizer="sgd", lr=0.4,
        momentum=0.9, weight_decay=1e-4, batch_size=IMAGENET_BATCH,
        steps=90 * STEPS_PER_EPOCH, warmup_steps=5 * STEPS_PER_EPOCH,
        milestones=(30, 60, 80), milestone_unit="epochs", gamma=0.1,
        augment=True, eval_every=STEPS_PER_EPOCH,
        levels=5,  # 0.8 ** 5 = 33% of weights; each level is 90 epochs, so a short default
        pruner={"method": "magnitude", "fraction": 0.2, "scope": "global"},
        rewind_step=0,
        validation_size=0,
    )
