"""Data: toy sets, arrays and standardization, image readers, the data-set table, download, and
the maps to model space (dequantization). Knows no SDE.

Every public name of the modules below is importable from here:

- :mod:`.toy`: the toy sets (``TOY``) and their exact mixtures (``TOY_MIXTURES``);
- :mod:`.arrays`: a user's ``.npy`` / ``.csv``, ``split``, ``Standardizer``;
- :mod:`.images`: readers of IDX files, ``.npz`` archives, CIFAR-10 batches and image folders;
- :mod:`.datasets`: the named image sets (``IMAGE_DATASETS``), where they live, ``load_images``;
- :mod:`.download`: fetching the named sets, only when asked;
- :mod:`.transforms`: model space (``SCALING``, ``to_float``, ``from_model``), dequantization;
- :mod:`.batches`: shuffled, resumable batches of images;
- :mod:`.spec`: ``DataConfig``, the data section of a configuration;
- :mod:`.load`: ``load_data``, a run's data from its ``DataConfig``, and a user's images.
"""

from .arrays import Standardizer, load_array, split
from .batches import ImageBatches
from .datasets import (
    CIFAR_BATCHES,
    CIFAR_FOLDER,
    DEFAULT_DIRS,
    ENV_VAR,
    IMAGE_DATASETS,
    ImageDataset,
    data_roots,
    load_images,
)
from .download import CIFAR_ARCHIVE, IDX_MD5, SOURCES, download, ensure_downloaded
from .images import (
    IDX_IMAGES,
    IDX_LABELS,
    IMAGE_SUFFIXES,
    SPLITS,
    DataError,
    DatasetNotFound,
    load_image_folder,
    load_image_npz,
    read_cifar_batch,
    read_idx,
)
from .load import is_image_path, load_data, load_image_path
from .spec import DataConfig
from .toy import (
    TOY,
    TOY_MIXTURES,
    checkerboard,
    eight_gaussians,
    mixture_1d,
    mixture_2d,
    moons,
    swiss_roll,
    toy_mixture,
)
from .transforms import (
    SCALING,
    check_images,
    dequantize,
    from_model,
    images_to_model,
    random_hflip,
    to_float,
)

__all__ = [
    # toy sets
    "TOY",
    "TOY_MIXTURES",
    "toy_mixture",
    "swiss_roll",
    "moons",
    "checkerboard",
    "eight_gaussians",
    "mixture_1d",
    "mixture_2d",
    # a user's vectors
    "load_array",
    "split",
    "Standardizer",
    # image readers
    "DataError",
    "DatasetNotFound",
    "SPLITS",
    "IDX_IMAGES",
    "IDX_LABELS",
    "read_idx",
    "load_image_npz",
    "read_cifar_batch",
    "IMAGE_SUFFIXES",
    "load_image_folder",
    # named image sets
    "ImageDataset",
    "IMAGE_DATASETS",
    "ENV_VAR",
    "DEFAULT_DIRS",
    "CIFAR_FOLDER",
    "CIFAR_BATCHES",
    "data_roots",
    "load_images",
    # download
    "IDX_MD5",
    "CIFAR_ARCHIVE",
    "SOURCES",
    "download",
    "ensure_downloaded",
    # model space
    "SCALING",
    "dequantize",
    "to_float",
    "from_model",
    "random_hflip",
    "check_images",
    "images_to_model",
    "ImageBatches",
    # a run's data
    "DataConfig",
    "load_data",
    "is_image_path",
    "load_image_path",
]
