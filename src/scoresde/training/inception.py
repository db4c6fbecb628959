"""Finding and loading the user's copy of the FID Inception-v3 weights.

FID and KID of RGB images compare the pool3 features of the TF FID Inception graph; its weights,
ported to PyTorch as ``pt_inception-2015-12-05-6726825d.pth`` (:data:`INCEPTION_URL`), are not
shipped and never downloaded here. Put the file at ``<data root>/features/`` (the data roots of
:func:`scoresde.data.datasets.data_roots`: ``data_dir``, else ``$SCORESDE_DATA``, else ``./data``
and ``../shared/data``) or pass its path (``--inception FILE``). No checksum is checked (an
equivalent copy may differ in bytes); the keys and shapes are, exactly, except that the file may
lack the ``num_batches_tracked`` counters of newer PyTorch versions (they are never used in eval).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from ..data.datasets import data_roots
from ..nets.inception import InceptionFeatures
from .checkpoint import check_state_dict

__all__ = ["INCEPTION_FILE", "INCEPTION_URL", "inception_path", "load_inception"]

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE
)
_COUNTER = "num_batches_tracked"


def _candidates(data_dir: str | Path | None) -> list[Path]:
    """``<root>/features/<INCEPTION_FILE>`` for every data root, in search order."""
    return [Path(root) / "features" / INCEPTION_FILE for root in data_roots(data_dir)]


def inception_path(data_dir: str | Path | None = None) -> Path:
    """Where the Inception weights are looked for: ``<data root>/features/<INCEPTION_FILE>``.

    The first data root holding the file wins; where none does, the path under the first root
    (the place to put it).
    """
    paths = _candidates(data_dir)
    return next((p for p in paths if p.is_file()), paths[0])


def _missing(paths: list[Path]) -> FileNotFoundError:
    """The one-line message of a missing weights file: what to fetch and where to put it."""
    where = ", ".join(str(p) for p in paths)
    return FileNotFoundError(
        f"Inception weights {INCEPTION_FILE} not found (looked at {where}); download "
        f"{INCEPTION_URL} and put it at {paths[0]}, or pass --inception FILE"
    )


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of ``path``, which must hold ``{name: tensor}``."""
    try:
        with warnings.catch_warnings():  # junk bytes draw torch's "pickle protocol" warnings
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # objects weights_only refused: a complete zip file, or a legacy one naming a class
        if zipfile.is_zipfile(path) or "Unsupported global" in str(e):
            raise ValueError(
                f"Inception weights {path} hold Python objects other than tensors; refused "
                "(never unpickled): not a state dict"
            ) from None
        raise ValueError(
            f"Inception weights {path} are truncated, corrupt or no torch file"
        ) from None
    except Exception as e:  # the legacy unpickler fails on junk in many ways
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"Inception weights {path} are truncated, corrupt or no torch file ({first})"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"Inception weights {path} are not a state dict of tensors "
            f"(found {type(state).__name__}); expected {INCEPTION_FILE}"
        )
    return state


def load_inception(
    path: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> InceptionFeatures:
    """The FID Inception-v3 with the user's weights, in eval mode on ``device``, frozen.

    ``path``: the weights file (or a folder holding :data:`INCEPTION_FILE`); ``None`` looks at
    :func:`inception_path` under every data root. A missing file raises ``FileNotFoundError``;
    an unreadable one, or one whose names or shapes differ from the network's (other than
    missing ``num_batches_tracked`` counters), a one-line ``ValueError``.
    """
    if path is None:
        paths = _candidates(data_dir)
        found = [p for p in paths if p.is_file()]
        if not found:
            raise _missing(paths)
        path = found[0]
    path = Path(path)
    if path.is_dir():
        path = path / INCEPTION_FILE
    if not path.is_file():
        raise _missing([path])
    state = _read_state(path)
    net = InceptionFeatures()
    expected = {k: v for k, v in net.state_dict().items() if k in state or not k.endswith(_COUNTER)}
    check_state_dict(state, expected, f"Inception weights {path}", hint=f"not {INCEPTION_FILE}?")
    result = net.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and all(k.endswith(_COUNTER) for k in result.missing_keys)
    return net.to(device).eval().requires_grad_(False)
