"""Data: prepared-dataset loader, on-device frame augmentation, the embedded avsynth set."""

from avgmm.data.pipeline import Dataset, DatasetMeta, load_dataset, pad_batch

__all__ = ["Dataset", "DatasetMeta", "load_dataset", "pad_batch"]
