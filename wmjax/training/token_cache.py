"""The frozen encoder's tokens of a whole dataset, computed once before training.

The encoder is frozen while the predictor trains and finetunes (PAPER.md section 2), so a frame's
tokens never change. Rendering and encoding every window's num_hist + 1 frames at every step
repeats that work steps x batch x (num_hist + 1) / frames times over (PushT `cpu`: 8,000 x 32 x
4 / 100,000 = 10x; on 2 CPU cores caching saves 18-28% of a step). `add_tokens` encodes every
frame of `WindowArrays` once; the training windows then carry 'visual' and skip rendering and
encoding (`loader.gather_windows`, `losses.encode_window`). `maybe_add_tokens` does so when the
model reads pixels and the tokens fit a memory budget (a DINOv2 cache of the paper's PushT data
would need ~800 GB: it then keeps encoding per step, and says so).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wmjax.data import loader

# Frames rendered and encoded per call while filling the cache.
CHUNK = 512


def cache_bytes(model: Any, arrays: loader.WindowArrays) -> int:
  """Bytes of the float32 token cache of `arrays` (N, T+1 frames of tokens x visual_dim)."""
  n, t1 = arrays.states.shape[:2]
  spec = model.latent_spec
  return int(n) * int(t1) * spec.num_tokens * spec.visual_dim * 4


def add_tokens(model: Any, params: Any, arrays: loader.WindowArrays, env: Any,
               image_size: int, chunk: int = CHUNK) -> loader.WindowArrays:
  """`arrays` with `visual` (N, T+1, tokens, Dv): every frame rendered and encoded once.

  Args:
    model: a `WorldModel` whose encoder reads pixels.
    params: its parameters (only the frozen 'encoder' entry is used).
    arrays: the dataset on device.
    env: the task (renders the frames).
    image_size: rendered image side.
    chunk: frames per encoder call (one compiled program; the last chunk is padded).
  """
  if model.obs_key != 'pixels':
    raise ValueError(f'add_tokens renders pixels for the encoder; this model reads '
                     f'{model.obs_key!r}.')
  n, t1, s = arrays.states.shape
  flat = arrays.states.reshape(n * t1, s)
  total = flat.shape[0]
  chunk = max(1, min(int(chunk), total))
  num_chunks = -(-total // chunk)
  padded = jnp.concatenate([flat, jnp.repeat(flat[:1], num_chunks * chunk - total, axis=0)])

  @jax.jit
  def encode_all(encoder_params, states):
    def one(chunk_states):
      pixels = loader.add_pixels(env, {'state': chunk_states}, image_size)['pixels']
      return model.encode_visual({'encoder': encoder_params}, pixels)
    return jax.lax.map(one, states.reshape(num_chunks, chunk, s))

  tokens = encode_all(params['encoder'], padded)
  tokens = tokens.reshape(num_chunks * chunk, *tokens.shape[2:])[:total]
  return arrays._replace(visual=tokens.reshape(n, t1, *tokens.shape[1:]))


def maybe_add_tokens(model: Any, params: Any, arrays: loader.WindowArrays, env: Any,
                     image_size: int, max_gb: float) -> tuple[loader.WindowArrays, str]:
  """`add_tokens` when the model reads pixels and the cache needs at most `max_gb` GB (0: never).

  Returns:
    (arrays, a one-line note saying what was done and why).
  """
  if model.obs_key != 'pixels':
    return arrays, f'no token cache: the encoder reads {model.obs_key!r}, not pixels'
  size = cache_bytes(model, arrays) / 1e9
  frames = int(np.prod(arrays.states.shape[:2]))
  if size > max_gb:
    return arrays, (f'no token cache: {frames} frames of tokens need {size:.2f} GB > '
                    f'token_cache_gb={max_gb:g}; the encoder runs at every step')
  return (add_tokens(model, params, arrays, env, image_size),
          f'token cache: {frames} frames encoded once ({size:.2f} GB)')
