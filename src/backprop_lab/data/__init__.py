"""The data layer: IDX and CSV readers, in-memory loaders that serve blocks of mini-batches, and the
LightningDataModules for MNIST, Fashion-MNIST and the embedded 5,000-digit subset."""

from backprop_lab.data.loader import Block, InMemoryLoader
from backprop_lab.data.modules import (
    DataFallbackWarning,
    FashionMNISTDataModule,
    InMemoryDataModule,
    MNISTDataModule,
    MNISTSubsetDataModule,
    stratified_split,
)
from backprop_lab.errors import DataError

__all__ = [
    "Block",
    "DataError",
    "DataFallbackWarning",
    "FashionMNISTDataModule",
    "InMemoryDataModule",
    "InMemoryLoader",
    "MNISTDataModule",
    "MNISTSubsetDataModule",
    "stratified_split",
]
