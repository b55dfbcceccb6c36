"""DINO-WM's frame-causal ViT predictor (paper section 2).

Input: per frame, N tokens of (Dv + proprio emb + action emb) features; a learned positional embedding
over num_frames x N token positions; frame-causal attention (a token of frame t sees every token of the
frames <= t); pre-LN blocks with a GELU MLP; a final LayerNorm. Output frame t predicts frame t + 1.

Dropout follows DINO-WM on the attention output projection and inside the MLP. DINO-WM also drops
attention probabilities; `jax.nn.dot_product_attention` (needed for the fused cuDNN kernel) has no such
option, so that single dropout site is omitted.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ATTENTION_IMPLEMENTATIONS = (None, 'xla', 'cudnn')


def frame_causal_mask(num_frames: int, num_patches: int) -> np.ndarray:
  """(L, L) bool mask, L = num_frames * num_patches; True where query i may attend to key j.

  Token i belongs to frame i // num_patches; it sees every token of frames <= its own (section 2).
  """
  frame = np.arange(num_frames * num_patches) // num_patches
  return frame[:, None] >= frame[None, :]


class _Block(nn.Module):
  """Pre-LN transformer block: x + Drop(Proj(Attn(LN(x)))); x + MLP(LN(x))."""

  width: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  dropout: float
  attention_impl: str | None
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    b, l, _ = x.shape
    inner = self.num_heads * self.head_dim
    h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name='norm1')(x)
    qkv = nn.Dense(3 * inner, use_bias=False, dtype=self.dtype, name='qkv')(h)
    q, k, v = jnp.split(qkv.reshape(b, l, 3, self.num_heads, self.head_dim), 3, axis=2)
    a = jax.nn.dot_product_attention(
        q[:, :, 0], k[:, :, 0], v[:, :, 0], mask=mask, implementation=self.attention_impl)
    a = nn.Dense(self.width, dtype=self.dtype, name='proj')(a.reshape(b, l, inner))
    x = x + nn.Dropout(self.dropout)(a, deterministic=deterministic)
    h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name='norm2')(x)
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(h)
    h = nn.Dropout(self.dropout)(nn.gelu(h, approximate=False), deterministic=deterministic)
    h = nn.Dense(self.width, dtype=self.dtype, name='fc2')(h)
    return x + nn.Dropout(self.dropout)(h, deterministic=deterministic)


class Predictor(nn.Module):
  """Frame-causal ViT over a window of frames.

  Attributes:
    num_frames: maximum window length (num_hist); the positional embedding covers num_frames x N.
    depth, num_heads, head_dim, mlp_dim, dropout: transformer sizes (paper: 6, 16, 64, 2048, 0.1).
    width: None to run the blocks at the token dim (DINO-WM); otherwise linear in/out projections to
      this width (e.g. 404 padded to 512, a multiple of 128, for accelerators; section 7).
    attention_impl: None | 'xla' | 'cudnn' (passed to `jax.nn.dot_product_attention`; 'cudnn' needs
      dtype bfloat16 on a GPU).
    dtype: computation dtype (float32 or bfloat16); parameters stay float32, the output is float32.
  """

  num_frames: int
  depth: int = 6
  num_heads: int = 16
  head_dim: int = 64
  mlp_dim: int = 2048
  dropout: float = 0.1
  width: int | None = None
  attention_impl: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
    """tokens: (..., T, N, D), T <= num_frames -> (..., T, N, D); output t predicts frame t+1."""
    if self.attention_impl not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f'attention_impl={self.attention_impl!r}; choose one of '
                       f'{ATTENTION_IMPLEMENTATIONS}.')
    if tokens.ndim < 3:
      raise ValueError(f'Predictor tokens must be (..., T, N, D); got shape {tokens.shape}.')
    *batch, t, n, d = tokens.shape
    if t > self.num_frames:
      raise ValueError(f'Predictor window has T={t} frames > num_hist={self.num_frames}.')
    width = d if self.width is None else self.width
    x = tokens.reshape(-1, t * n, d).astype(self.dtype)
    if self.width is not None:
      x = nn.Dense(width, dtype=self.dtype, name='proj_in')(x)
    # Learned positional embedding over num_hist x N positions; a shorter window uses the first
    # T x N rows (section 2).
    pos = self.param('pos_embedding', nn.initializers.normal(0.02), (self.num_frames * n, width))
    x = x + pos[:t * n].astype(self.dtype)
    mask = jnp.asarray(frame_causal_mask(t, n))[None, None]  # Frame-causal mask (section 2).
    for i in range(self.depth):
      x = _Block(width, self.num_heads, self.head_dim, self.mlp_dim, self.dropout,
                 self.attention_impl, self.dtype, name=f'block_{i}')(x, mask, deterministic)
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name='norm')(x)
    if self.width is not None:
      x = nn.Dense(d, dtype=self.dtype, name='proj_out')(x)
    return x.astype(jnp.float32).reshape(*batch, t, n, d)
