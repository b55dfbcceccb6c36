"""DINO-WM's frame-causal ViT predictor (paper section 2).

Input: per frame, N tokens of (Dv + proprio emb + action emb) features; a learned positional embedding
over num_frames x N token positions; frame-causal attention (a token of frame t sees every token of the
frames <= t); pre-LN blocks with a GELU MLP; a final LayerNorm. Output frame t predicts frame t + 1.

Dropout follows DINO-WM on the attention output projection and inside the MLP. DINO-WM also drops
attention probabilities; `jax.nn.dot_product_attention` (needed for the fused cuDNN kernel) has no such
option, so that single dropout site is omitted. The attention itself is `attention.py`: the fused
cuDNN kernel runs it per query frame over the key prefix (no mask operand), which keeps it working
under `vmap` and `grad`.
"""

import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wmjax.models import attention as attention_lib
from wmjax.models.attention import frame_causal_mask  # Re-exported. pylint: disable=unused-import

# None: jax's default (XLA); 'xla'; 'cudnn': the fused cuDNN kernel (GPU, bfloat16); 'auto': 'cudnn'
# on a CUDA GPU with bfloat16 computation, else None.
ATTENTION_IMPLEMENTATIONS = (None, 'xla', 'cudnn', 'auto')
DTYPES = ('float32', 'bfloat16')  # Computation dtypes; parameters and outputs stay float32.
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_WARNED: set[str] = set()  # Fallback reasons already warned about (one warning per process each).


def check_options(attention_impl: Any = None, dtype: Any = 'float32', width: Any = None,
                  pad_width_to: Any = 0) -> jnp.dtype:
  """Validates the predictor's options; returns the computation dtype.

  Raises:
    ValueError: naming the bad option and its valid choices.
  """
  if attention_impl not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f'attention_impl={attention_impl!r}; choose one of '
                     f'{ATTENTION_IMPLEMENTATIONS}.')
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    dt = None
  if dt is None or dt.name not in DTYPES:
    raise ValueError(f'predictor dtype={dtype!r}; choose one of {DTYPES}.')
  if width is not None and (isinstance(width, bool) or not isinstance(width, (int, np.integer))
                            or width < 1):
    raise ValueError(f'predictor width={width!r}; choose None (the token dim) or an int >= 1.')
  if (isinstance(pad_width_to, bool) or not isinstance(pad_width_to, (int, np.integer))
      or pad_width_to < 0):
    raise ValueError(f'predictor pad_width_to={pad_width_to!r}; choose 0 (off) or an int >= 1 '
                     '(e.g. 128: 404 -> 512).')
  return dt


def block_width(token_dim: int, width: int | None = None, pad_width_to: int = 0) -> int:
  """Width the transformer blocks run at: `width` (default the token dim) rounded up to a multiple
  of `pad_width_to` when that is > 0 (section 7: 404 -> 512 for pad_width_to=128)."""
  w = token_dim if width is None else int(width)
  if pad_width_to:
    w = -(-w // int(pad_width_to)) * int(pad_width_to)
  return w


def resolve_attention_impl(attention_impl: str | None, dtype: Any, head_dim: int = 64,
                           backend: str | None = None) -> str | None:
  """The implementation `jax.nn.dot_product_attention` gets for a configured `attention_impl`.

  'auto' is 'cudnn' on a GPU backend when the computation dtype is bfloat16 and head_dim suits the
  fused kernel (a multiple of 8, <= 128); otherwise None (jax's default, XLA). An explicit 'cudnn'
  where the fused kernel cannot run (a non-GPU backend, or a float32 computation) falls back to
  'xla' with one warning instead of failing.

  Args:
    attention_impl: None | 'xla' | 'cudnn' | 'auto'.
    dtype: computation dtype.
    head_dim: features per head.
    backend: platform name (default `jax.default_backend()`, read when the model is traced).
  """
  check_options(attention_impl, dtype)
  if attention_impl not in ('auto', 'cudnn'):
    return attention_impl
  backend = jax.default_backend() if backend is None else backend
  on_gpu = backend in ('gpu', 'cuda')
  half = jnp.dtype(dtype) in _HALF
  if attention_impl == 'auto':
    return 'cudnn' if on_gpu and half and head_dim % 8 == 0 and head_dim <= 128 else None
  if not (on_gpu and half):
    why = f'the {backend} backend' if not on_gpu else f'dtype {jnp.dtype(dtype).name}'
    if why not in _WARNED:
      _WARNED.add(why)
      warnings.warn(f"attention_impl='cudnn' needs a GPU and bfloat16 computation; falling back "
                    f"to 'xla' ({why}).", RuntimeWarning, stacklevel=2)
    return 'xla'
  return 'cudnn'


class _Block(nn.Module):
  """Pre-LN transformer block: x + Drop(Proj(Attn(LN(x)))); x + MLP(LN(x))."""

  width: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  dropout: float
  attention_impl: str | None
  attention_method: str
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, num_frames: int, deterministic: bool,
               past: tuple[jax.Array, jax.Array] | None = None, last_frame_only: bool = False
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """x: (B, L, width). Without `past`, L = num_frames * N (the whole window). With `past`, the
    keys and values (B, P, H, Dh) of the earlier frames, x is the next frame's tokens: it sees
    them and itself. `last_frame_only`: every frame gives keys and values, only the last one's
    tokens are computed and returned. Returns (x', (keys, values)) of every frame so far."""
    b, l, _ = x.shape
    inner = self.num_heads * self.head_dim
    h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name='norm1')(x)
    qkv = nn.Dense(3 * inner, use_bias=False, dtype=self.dtype, name='qkv')(h)
    q, k, v = jnp.split(qkv.reshape(b, l, 3, self.num_heads, self.head_dim), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
    if last_frame_only and num_frames > 1:  # The last frame's queries see every frame: no mask.
      l //= num_frames
      x, q = x[:, -l:], q[:, -l:]
      a = jax.nn.dot_product_attention(q, k, v, implementation=self.attention_impl)
    elif past is None:  # Frame-causal attention (section 2).
      a = attention_lib.frame_causal_attention(
          q, k, v, num_frames, implementation=self.attention_impl, method=self.attention_method)
    else:  # The newest frame sees every earlier frame and itself: no mask.
      k, v = jnp.concatenate([past[0], k], axis=1), jnp.concatenate([past[1], v], axis=1)
      a = jax.nn.dot_product_attention(q, k, v, implementation=self.attention_impl)
    a = nn.Dense(self.width, dtype=self.dtype, name='proj')(a.reshape(b, l, inner))
    x = x + nn.Dropout(self.dropout)(a, deterministic=deterministic)
    h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name='norm2')(x)
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(h)
    h = nn.Dropout(self.dropout)(nn.gelu(h, approximate=False), deterministic=deterministic)
    h = nn.Dense(self.width, dtype=self.dtype, name='fc2')(h)
    return x + nn.Dropout(self.dropout)(h, deterministic=deterministic), (k, v)


class Predictor(nn.Module):
  """Frame-causal ViT over a window of frames.

  Attributes:
    num_frames: maximum window length (num_hist); the positional embedding covers num_frames x N.
    depth, num_heads, head_dim, mlp_dim, dropout: transformer sizes (paper: 6, 16, 64, 2048, 0.1).
    width: None to run the blocks at the token dim (DINO-WM); otherwise linear in/out projections to
      this width.
    pad_width_to: 0 (off) or a multiple the block width is rounded up to, through the same
      proj_in/proj_out projections (section 7: 404 -> 512 with 128, a better shape for
      accelerators). A width already a multiple adds nothing.
    attention_impl: None | 'xla' | 'cudnn' | 'auto' (see `resolve_attention_impl`; 'cudnn' needs
      dtype bfloat16 on a GPU and falls back to 'xla' with a warning elsewhere).
    attention_method: None (the default for the resolved implementation: 'prefix' for cuDNN,
      else 'mask') | 'mask' | 'prefix' (see `wmjax.models.attention`; same numbers up to rounding).
    dtype: computation dtype, float32 or bfloat16. Parameters stay float32, the residual stream
      between blocks stays float32 (matmuls, LayerNorm outputs and attention run in `dtype`), and
      the output is float32.
  """

  num_frames: int
  depth: int = 6
  num_heads: int = 16
  head_dim: int = 64
  mlp_dim: int = 2048
  dropout: float = 0.1
  width: int | None = None
  pad_width_to: int = 0
  attention_impl: str | None = None
  attention_method: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool = True,
               cache: tuple[tuple[jax.Array, jax.Array], ...] | None = None,
               last_frame_only: bool = False):
    """The predictor over a whole window, or one frame more of a window (`cache`).

    Args:
      tokens: (..., T, N, D), T <= num_frames; with `cache`, T = 1 (the next frame).
      deterministic: False enables dropout.
      cache: None, or the keys and values of the frames before `tokens`, as the previous call
        returned them (`()` for none: `tokens` is frame 0). Under frame-causal attention the
        frames already in a growing window keep their keys and values, so each step of a
        growing rollout computes only its newest frame.
      last_frame_only: return the last frame's output only: the last block computes its
        tokens alone (earlier frames still give it keys and values), which a sliding rollout
        that reads only the newest prediction does not need to pay for.

    Returns:
      Without `cache`: (..., T, N, D), or (..., 1, N, D) with `last_frame_only`; output t
      predicts frame t+1. With `cache`: (output (..., 1, N, D), cache extended by this frame).
    """
    dtype = check_options(self.attention_impl, self.dtype, self.width, self.pad_width_to)
    if tokens.ndim < 3:
      raise ValueError(f'Predictor tokens must be (..., T, N, D); got shape {tokens.shape}.')
    *batch, t, n, d = tokens.shape
    if cache is not None and t != 1:
      raise ValueError(f'With a cache the predictor takes one frame (..., 1, N, D); got T={t}.')
    if cache is not None and last_frame_only:
      raise ValueError('last_frame_only is for a whole window; with a cache the output is '
                       'already the one new frame.')
    if cache and len(cache) != self.depth:
      raise ValueError(f'cache has {len(cache)} blocks; the predictor has depth {self.depth}.')
    start = cache[0][0].shape[1] // n if cache else 0  # Frames already in the window.
    if start + t > self.num_frames:
      raise ValueError(f'Predictor window has T={start + t} frames > num_hist={self.num_frames}.')
    impl = resolve_attention_impl(self.attention_impl, dtype, self.head_dim)
    method = attention_lib.default_method(impl) if self.attention_method is None else (
        self.attention_method)
    width = block_width(d, self.width, self.pad_width_to)
    project = width != d or self.width is not None
    x = tokens.reshape(-1, t * n, d).astype(jnp.float32)
    if project:
      x = nn.Dense(width, dtype=dtype, name='proj_in')(x).astype(jnp.float32)
    # Learned positional embedding over num_hist x N positions; a shorter window uses the first
    # T x N rows (section 2).
    pos = self.param('pos_embedding', nn.initializers.normal(0.02), (self.num_frames * n, width))
    x = x + pos[start * n:(start + t) * n]
    kv = []
    for i in range(self.depth):
      x, kv_i = _Block(width, self.num_heads, self.head_dim, self.mlp_dim, self.dropout, impl,
                       method, dtype, name=f'block_{i}')(
                           x, t, deterministic, past=cache[i] if cache else None,
                           last_frame_only=last_frame_only and i == self.depth - 1)
      kv.append(kv_i)
    x = nn.LayerNorm(epsilon=1e-5, dtype=dtype, name='norm')(x)
    if project:
      x = nn.Dense(d, dtype=dtype, name='proj_out')(x)
    out = x.astype(jnp.float32).reshape(*batch, 1 if last_frame_only else t, n, d)
    return out if cache is None else (out, tuple(kv))
