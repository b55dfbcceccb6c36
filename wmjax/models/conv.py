"""A small convolutional patch autoencoder: the CPU-scale stand-in for DINOv2 (paper sections 2, 9).

The encoder maps uint8 pixels (..., H, W, 3) to a spatial grid of patch tokens (..., h*w, Dv),
h = H / 2**len(channels); a spatial grid, not one global vector, because a weak global code made
planning fail in a small probe (section 9). It is pretrained as an autoencoder on the task's own
images with a foreground-balanced MSE (small objects such as the dot, the ball or the T carry most
of the weight, `wmjax.training.pretrain`), then frozen during world-model training like DINOv2.
The token standardisation (`token_mean` / `token_scale`) is set after pretraining.
"""

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wmjax.models import initializers

CONV_FIELDS = ('image_size', 'channels', 'token_dim', 'normalize_tokens')


class ConvAutoencoder(nn.Module):
  """Conv patch encoder (`__call__`) plus its decoder (`decode`).

  Attributes:
    image_size: input side H = W in pixels (divisible by 2**len(channels)).
    channels: channels of each stride-2 stage; the grid side is image_size / 2**len(channels)
      (64 px with 3 stages -> 8x8 tokens, 4 stages -> 4x4).
    token_dim: Dv, features per token.
    normalize_tokens: LayerNorm (no scale/bias) on every token, so latents have a fixed scale
      as DINOv2's normalised patch tokens do.

  Parameters 'token_mean' (h*w, Dv) and 'token_scale' () standardise the output tokens,
  (tokens - token_mean) * token_scale: identity at init, set by `pretrain_conv_autoencoder` to
  the mean token and 1 / the mean per-feature std over the task's frames, so the part of the
  latent that changes with the scene has unit scale (it was ~1e-4 of a LayerNormed token's).
  """

  image_size: int = 64
  channels: tuple[int, ...] = (32, 64, 128)
  token_dim: int = 64
  normalize_tokens: bool = True

  obs_key = 'pixels'

  @property
  def grid(self) -> int:
    return self.image_size // 2**len(self.channels)

  def setup(self):
    if self.image_size % 2**len(self.channels):
      raise ValueError(f'conv image_size={self.image_size} must be divisible by '
                       f'2**len(channels)={2**len(self.channels)}.')
    conv = functools.partial(nn.Conv, padding='SAME', kernel_init=initializers.conv_kernel)
    enc = []
    for c in self.channels:
      enc += [conv(c, (4, 4), strides=2), conv(c, (3, 3))]
    self.enc = enc
    self.to_tokens = conv(self.token_dim, (1, 1))
    self.token_norm = nn.LayerNorm(use_scale=False, use_bias=False)
    self.token_mean = self.param('token_mean', nn.initializers.zeros,
                                 (self.grid * self.grid, self.token_dim))
    self.token_scale = self.param('token_scale', nn.initializers.ones, ())
    self.from_tokens = conv(self.channels[-1], (3, 3))
    dec = []
    for c in reversed(self.channels):
      dec += [conv(c, (3, 3)), conv(c, (3, 3))]
    self.dec = dec
    self.to_pixels = conv(3, (3, 3))

  def __call__(self, pixels: jax.Array) -> jax.Array:
    """pixels: (..., H, W, 3) uint8 -> tokens (..., h*w, Dv)."""
    batch = pixels.shape[:-3]
    x = pixels.reshape(-1, *pixels.shape[-3:]).astype(jnp.float32) / 127.5 - 1.0  # [-1, 1].
    for i in range(0, len(self.enc), 2):
      x = nn.gelu(self.enc[i](x))
      x = x + nn.gelu(self.enc[i + 1](x))
    x = self.to_tokens(x)
    if self.normalize_tokens:
      x = self.token_norm(x)
    x = x.reshape(*batch, self.grid * self.grid, self.token_dim)
    return (x - self.token_mean) * self.token_scale

  def decode(self, tokens: jax.Array) -> jax.Array:
    """tokens: (..., h*w, Dv) -> images (..., H, W, 3) in [-1, 1] units (not clipped)."""
    batch = tokens.shape[:-2]
    x = tokens / self.token_scale + self.token_mean
    x = x.reshape(-1, self.grid, self.grid, self.token_dim)
    x = nn.gelu(self.from_tokens(x))
    for i in range(0, len(self.dec), 2):
      # Nearest 2x upsampling + conv: XLA:CPU runs transposed convolutions' gradients slowly.
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = nn.gelu(self.dec[i](x))
      x = x + nn.gelu(self.dec[i + 1](x))
    x = self.to_pixels(x)
    return x.reshape(*batch, *x.shape[1:])

  def autoencode(self, pixels: jax.Array) -> jax.Array:
    """pixels (..., H, W, 3) uint8 -> reconstruction (..., H, W, 3) in [-1, 1] units."""
    return self.decode(self(pixels))


def conv_autoencoder_from_config(config: Mapping[str, Any]) -> ConvAutoencoder:
  """Builds the module from a mapping with keys among CONV_FIELDS (e.g. `model_config.conv`)."""
  unknown = sorted(set(config) - set(CONV_FIELDS))
  if unknown:
    raise ValueError(f'Unknown conv encoder fields {unknown}; valid fields: {CONV_FIELDS}.')
  kwargs = dict(config)
  if 'channels' in kwargs:
    kwargs['channels'] = tuple(int(c) for c in kwargs['channels'])
  return ConvAutoencoder(**kwargs)
