"""Identity encoder: the low-dimensional state as a single visual token (debugging, fast tests)."""

import flax.linen as nn
import jax


class IdentityEncoder(nn.Module):
  """obs['state'] (..., S) -> (..., 1, S) tokens. No parameters."""

  obs_key = 'state'

  @nn.compact
  def __call__(self, state: jax.Array) -> jax.Array:
    return state[..., None, :].astype('float32')
