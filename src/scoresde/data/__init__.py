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

# Each module's __all__ is its public surface; this package re-exports all of them.
import sys

from .arrays import *  # noqa: F403
from .batches import *  # noqa: F403
from .datasets import *  # noqa: F403
from .download import *  # noqa: F403
from .images import *  # noqa: F403
from .load import *  # noqa: F403
from .spec import *  # noqa: F403
from .toy import *  # noqa: F403
from .transforms import *  # noqa: F403

_MODULES = (
    "toy",
    "arrays",
    "images",
    "datasets",
    "download",
    "transforms",
    "batches",
    "spec",
    "load",
)
__all__ = [name for m in _MODULES for name in sys.modules[f"{__name__}.{m}"].__all__]
