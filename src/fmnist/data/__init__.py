"""Data: find, download, verify and parse Fashion-MNIST (IDX or Kaggle CSV) or the user's own data (image folders, .npz, classes.txt) into uint8 arrays."""

from fmnist.data.classes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from fmnist.data.loading import Split, load, load_split, locate_data
from fmnist.data.locate import DataSource, SplitFiles, cache_data_dir
from fmnist.data.split import stratified_split

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "DataSource",
    "Split",
    "SplitFiles",
    "cache_data_dir",
    "load",
    "load_split",
    "locate_data",
    "stratified_split",
]
