"""Models: ResNet trunks and the two-stream audio-visual classifier."""

from avgmm.models.av_classifier import (AVClassifier, AVLogits, SeparateHeads, SharedHead,
                                        SplitFusionHead)
from avgmm.models.resnet import BasicBlock, ResNetTrunk

__all__ = ["AVClassifier", "AVLogits", "BasicBlock", "ResNetTrunk", "SeparateHeads",
           "SharedHead", "SplitFusionHead"]
