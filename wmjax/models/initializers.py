"""Parameter initialisers that compile fast on CPU.

XLA's CPU compile of random-bit generation is ~1 s slower for arrays of rank > 2 than for the same
number of elements in 2-D, so conv kernels and (1, 1, D) tokens are drawn in 2-D and reshaped. The
variance-scaling fans of a (kh, kw, in, out) kernel flattened to (kh*kw*in, out) are unchanged.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def flat(init: nn.initializers.Initializer) -> nn.initializers.Initializer:
  """Wraps `init` to draw an (..., out) array as (prod(...), out) and reshape it."""

  def wrapped(key, shape, dtype=jnp.float32):
    shape = tuple(shape)
    if len(shape) <= 2:
      return init(key, shape, dtype)
    return init(key, (int(np.prod(shape[:-1])), shape[-1]), dtype).reshape(shape)

  return wrapped


conv_kernel = flat(nn.initializers.lecun_normal())
