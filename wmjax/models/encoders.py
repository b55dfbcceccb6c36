"""Registry of frozen observation encoders: name -> Linen module reading one obs key.

Every encoder module has a class attribute `obs_key` (the obs entry it reads) and maps that entry
(..., *obs_shape) to visual tokens (..., N, Dv). `init_method` names the method that creates every
parameter at init (the conv autoencoder also owns its decoder).
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn

from wmjax.models import conv
from wmjax.models import dinov2
from wmjax.models import identity


class EncoderSpec(NamedTuple):
  build: Any         # (config mapping) -> nn.Module
  fields: tuple      # valid config fields
  init_method: str   # method that creates all parameters


ENCODERS = {
    'identity': EncoderSpec(lambda c: identity.IdentityEncoder(), (), '__call__'),
    'conv': EncoderSpec(conv.conv_autoencoder_from_config, conv.CONV_FIELDS, 'autoencode'),
    'dinov2_vits14': EncoderSpec(dinov2.dinov2_from_config, dinov2.DINOV2_FIELDS + ('weights',),
                                 '__call__'),
}


def make_encoder(name: str, config: Mapping[str, Any] | None = None) -> nn.Module:
  """Builds encoder `name` (one of ENCODERS) from its config fields."""
  if name not in ENCODERS:
    raise ValueError(f'Unknown encoder {name!r}; choose one of {sorted(ENCODERS)}.')
  return ENCODERS[name].build(dict(config or {}))
