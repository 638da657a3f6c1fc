"""Low-shot segmentation: a light decoder on the pretrained trunk, pixel baselines, mIoU/Dice
and the verdict (`domainclust finetune --task segment`)."""

from domainclust.segmentation.decoder import SegmentationNet
from domainclust.segmentation.metrics import confusion, scores
from domainclust.segmentation.protocol import low_shot_segment
from domainclust.segmentation.training import SegmentSettings

__all__ = ["SegmentSettings", "SegmentationNet", "confusion", "low_shot_segment", "scores"]
