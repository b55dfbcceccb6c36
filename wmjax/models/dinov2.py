"""DINOv2 ViT (ViT-S/14 by default) in Flax: the paper's frozen encoder (section 2).

Returns the normalised patch tokens (`x_norm_patchtokens`). Pixels arrive as uint8 (..., S, S, 3)
(S = 224 in the paper), are resized on device to `resize_to` (196) and scaled to [-1, 1] (mean 0.5,
std 0.5, as DINO-WM does; not ImageNet statistics): 196 px -> 14 x 14 = 196 tokens of 384 dims.

Parameter names mirror the official checkpoint (see dinov2_convert.py): `cls_token`, `pos_embed`,
`patch_embed`, `blocks_{i}` with `norm1`, `attn_qkv`, `attn_proj`, `ls1`, `norm2`, `mlp_fc1`,
`mlp_fc2`, `ls2`, and the final `norm`. The positional embedding (learned for a pos_grid x pos_grid
patch grid, 37 for the official 518 px training size) is resampled to the input grid exactly like
the reference (bicubic, a = -0.75, align_corners False, no antialias, interpolate_offset 0.1).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wmjax.models import initializers

DINOV2_FIELDS = ('image_size', 'resize_to', 'patch_size', 'dim', 'depth', 'num_heads', 'mlp_dim',
                 'pos_grid', 'interpolate_offset', 'dtype')


def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
  """Keys cubic convolution weights for the 4 taps at offsets -1, 0, 1, 2 (as torch's bicubic)."""
  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1
  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=None)
def bicubic_matrix(in_size: int, out_size: int, scale: float) -> np.ndarray:
  """(out_size, in_size) matrix of torch's bicubic resampling (align_corners False, no antialias).

  scale: torch's `scale_factor` (output/input); source x = (dst + 0.5) / scale - 0.5, taps clamped.
  """
  m = np.zeros((out_size, in_size), np.float64)
  src = (np.arange(out_size) + 0.5) / scale - 0.5
  base = np.floor(src).astype(int)
  w = _cubic(src - base)
  for i in range(out_size):
    for j in range(4):
      m[i, np.clip(base[i] - 1 + j, 0, in_size - 1)] += w[i, j]
  return m.astype(np.float32)


class _LayerScale(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, x):
    return x * self.param('gamma', nn.initializers.constant(1e-5), (self.dim,))


class _Block(nn.Module):
  dim: int
  num_heads: int
  mlp_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    b, l, _ = x.shape
    ln = functools.partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    h = ln(name='norm1')(x)
    qkv = dense(3 * self.dim, name='attn_qkv')(h)
    qkv = qkv.reshape(b, l, 3, self.num_heads, self.dim // self.num_heads)
    a = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    a = dense(self.dim, name='attn_proj')(a.reshape(b, l, self.dim))
    x = x + _LayerScale(self.dim, name='ls1')(a)
    h = ln(name='norm2')(x)
    h = dense(self.dim, name='mlp_fc2')(nn.gelu(dense(self.mlp_dim, name='mlp_fc1')(h),
                                                approximate=False))
    return x + _LayerScale(self.dim, name='ls2')(h)


class Dinov2(nn.Module):
  """DINOv2 ViT returning x_norm_patchtokens.

  Attributes:
    image_size: side S of the uint8 input images (224 in the paper).
    resize_to: side the images are resized to on device (196 -> 14 x 14 patches of 14 px).
    patch_size, dim, depth, num_heads, mlp_dim: ViT-S/14 is 14, 384, 12, 6, 1536.
    pos_grid: side of the patch grid the positional embedding was learned for (37).
    interpolate_offset: DINOv2's positional-embedding interpolation offset (0.1).
    dtype: computation dtype.
  """

  image_size: int = 224
  resize_to: int = 196
  patch_size: int = 14
  dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  pos_grid: int = 37
  interpolate_offset: float = 0.1
  dtype: Any = jnp.float32

  obs_key = 'pixels'

  @property
  def grid(self) -> int:
    return self.resize_to // self.patch_size

  def _interpolated_pos(self, pos_embed: jax.Array) -> jax.Array:
    """(1, 1 + M*M, dim) -> (1, 1 + g*g, dim) for the input grid g (DINOv2's interpolation)."""
    g, m = self.grid, self.pos_grid
    if g == m:
      return pos_embed
    scale = (g + self.interpolate_offset) / m if self.interpolate_offset else g / m
    r = jnp.asarray(bicubic_matrix(m, g, scale))
    patch = pos_embed[0, 1:].reshape(m, m, self.dim)
    patch = jnp.einsum('ih,jw,hwd->ijd', r, r, patch, precision='highest')
    return jnp.concatenate([pos_embed[:, :1], patch.reshape(1, g * g, self.dim)], axis=1)

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    """pixels: (..., S, S, 3) uint8 -> (..., g*g, dim) normalised patch tokens."""
    if self.resize_to % self.patch_size:
      raise ValueError(f'resize_to={self.resize_to} must be a multiple of patch_size='
                       f'{self.patch_size}.')
    if self.dim % self.num_heads:
      raise ValueError(f'dim={self.dim} must be divisible by num_heads={self.num_heads}.')
    batch = pixels.shape[:-3]
    x = pixels.reshape(-1, *pixels.shape[-3:]).astype(jnp.float32) / 255.0
    if x.shape[1] != self.resize_to or x.shape[2] != self.resize_to:
      x = jax.image.resize(x, (x.shape[0], self.resize_to, self.resize_to, 3), 'bilinear',
                           antialias=True)
    x = ((x - 0.5) / 0.5).astype(self.dtype)  # [-1, 1], mean 0.5 std 0.5 (section 2).
    x = nn.Conv(self.dim, (self.patch_size, self.patch_size), strides=self.patch_size,
                padding='VALID', dtype=self.dtype, kernel_init=initializers.conv_kernel,
                name='patch_embed')(x)
    b = x.shape[0]
    x = x.reshape(b, -1, self.dim)
    cls = self.param('cls_token', initializers.flat(nn.initializers.normal(1e-6)), (1, 1, self.dim))
    pos = self.param('pos_embed', initializers.flat(nn.initializers.normal(0.02)),
                     (1, 1 + self.pos_grid**2, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)).astype(self.dtype), x], axis=1)
    x = x + self._interpolated_pos(pos).astype(self.dtype)
    for i in range(self.depth):
      x = _Block(self.dim, self.num_heads, self.mlp_dim, self.dtype, name=f'blocks_{i}')(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name='norm')(x)
    return x[:, 1:].astype(jnp.float32).reshape(*batch, self.grid**2, self.dim)


def dinov2_from_config(config) -> Dinov2:
  """Builds the module from a mapping with keys among DINOV2_FIELDS (+ 'weights', ignored here)."""
  kwargs = {k: v for k, v in dict(config).items() if k != 'weights'}
  unknown = sorted(set(kwargs) - set(DINOV2_FIELDS))
  if unknown:
    raise ValueError(f'Unknown dinov2 fields {unknown}; valid fields: '
                     f'{DINOV2_FIELDS + ("weights",)}.')
  if 'dtype' in kwargs and isinstance(kwargs['dtype'], str):
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  return Dinov2(**kwargs)

