"""Raw score networks ``net(x, noise_label) -> tensor``; they know no SDE.

``NETS`` maps a name to a network class; :func:`build_net` builds one from a plain dict of
parameters, checking every key and type against the class's ``Config`` dataclass (or, for a class
without one, its constructor signature) with the package's one value checker,
:func:`scoresde.nets.params.coerce`.
"""

from __future__ import annotations

from torch import nn

from .ddpm import DDPM, DDPMConfig
from .features import FeatureNet
from .mlp import MLP
from .ncsnpp import NCSNpp, NCSNppConfig
from .params import EMPTY, coerce, net_params
from .unet_tutorial import ScoreNet, UNetTutorialConfig

__all__ = [
    "NETS",
    "build_net",
    "net_params",
    "coerce",
    "NCSNpp",
    "NCSNppConfig",
    "DDPM",
    "DDPMConfig",
    "ScoreNet",
    "UNetTutorialConfig",
    "FeatureNet",
]

NETS: dict[str, type[nn.Module]] = {
    "ncsnpp": NCSNpp,
    "ddpm": DDPM,
    "unet_tutorial": ScoreNet,
    "mlp": MLP,
}


def build_net(name: str, params: dict | None = None) -> nn.Module:
    """Build the network ``NETS[name]`` from a plain dict of constructor parameters.

    Raises:
        ValueError: unknown network name (the valid ones are listed), unknown parameter (the valid
            keys are listed), a parameter of the wrong type, or a value the network rejects.
    """
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; valid: {', '.join(sorted(NETS))}")
    cls, params = NETS[name], dict(params or {})
    spec = net_params(cls)
    for key, value in params.items():
        if key not in spec:
            raise ValueError(
                f"unknown parameter {key!r} for network {name!r}; valid: {', '.join(spec)}"
            )
        try:
            params[key] = coerce(value, spec[key][0])
        except TypeError as e:
            raise ValueError(f"parameter {key!r} of network {name!r}: {e}") from None
    missing = [k for k, (_, default) in spec.items() if default is EMPTY and k not in params]
    if missing:
        raise ValueError(f"network {name!r} needs parameter(s) {', '.join(missing)}")
    return cls(**params)
