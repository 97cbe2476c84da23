"""Models: ResNet trunks, the two-stream audio-visual classifier, and the factory that
builds it from a config."""

from avgmm.models.av_classifier import AVClassifier, AVLogits, SharedHead, SplitFusionHead
from avgmm.models.factory import DTYPES, make_model, trunk_width
from avgmm.models.resnet import BasicBlock, ResNetTrunk

__all__ = ["AVClassifier", "AVLogits", "BasicBlock", "DTYPES", "ResNetTrunk", "SharedHead",
           "SplitFusionHead", "make_model", "trunk_width"]
