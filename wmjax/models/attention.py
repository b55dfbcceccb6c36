"""Frame-causal multi-head attention (PAPER.md section 2), in two equivalent forms.

A token of frame t attends to every token of the frames <= t. With T frames of N tokens each
(L = T * N, frames contiguous along L):

  'mask'    one `jax.nn.dot_product_attention` call with the (L, L) boolean mask; it computes all
            T x T blocks of logits and discards the upper ones.
  'prefix'  T unmasked calls, one per query frame t, over the key/value prefix of frames 0..t; no
            mask operand, and T (T + 1) / 2 blocks instead of T x T (2/3 of the logits at T = 3).

The fused cuDNN kernel gets 'prefix': jax's batching rule for it folds every vmapped axis of q, k
and v into the batch, but a mask (a bias to cuDNN) that `vmap` batches -- as it does inside the
planners' vmap(scan(...)) -- is reshaped with the head count and fails (jax 0.11: "cannot reshape
array of shape (300, 1, 1, 588, 588) into shape (300, 16, 588, 588)"). Without a mask there is
nothing to reshape. Both forms give the same numbers up to float rounding; 'mask' stays the XLA
default. Outputs are in the inputs' dtype (bfloat16 in, bfloat16 out).
"""

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ('mask', 'prefix')


def frame_causal_mask(num_frames: int, num_patches: int) -> np.ndarray:
  """(L, L) bool mask, L = num_frames * num_patches; True where query i may attend to key j.

  Token i belongs to frame i // num_patches; it sees every token of frames <= its own (section 2).
  """
  frame = np.arange(num_frames * num_patches) // num_patches
  return frame[:, None] >= frame[None, :]


def default_method(implementation: str | None) -> str:
  """'prefix' for the fused cuDNN kernel (no mask operand under vmap), else 'mask'."""
  return 'prefix' if implementation == 'cudnn' else 'mask'


def frame_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, num_frames: int, *,
                           implementation: str | None = None,
                           method: str | None = None) -> jax.Array:
  """Multi-head attention where a token of frame t sees the tokens of frames <= t.

  Args:
    q, k, v: (B, L, H, D), L = num_frames * N tokens, frame-major (frame t is rows t*N..t*N+N-1).
      Batch more leading axes with `jax.vmap`.
    num_frames: T (static).
    implementation: passed to `jax.nn.dot_product_attention` (None | 'xla' | 'cudnn').
    method: 'mask' | 'prefix' (see the module docstring); None: `default_method(implementation)`.

  Returns:
    (B, L, H, D) in q's dtype.
  """
  method = default_method(implementation) if method is None else method
  if method not in METHODS:
    raise ValueError(f'attention method={method!r}; choose one of {METHODS}.')
  if q.ndim != 4:
    raise ValueError(f'q, k, v must be (B, L, H, D); got q {q.shape}.')
  num_tokens = q.shape[1]
  if num_frames < 1 or num_tokens % num_frames:
    raise ValueError(f'{num_tokens} tokens do not split into num_frames={num_frames} frames.')
  n = num_tokens // num_frames
  attend = lambda q, k, v, mask=None: jax.nn.dot_product_attention(
      q, k, v, mask=mask, implementation=implementation)
  if num_frames == 1:  # One frame sees itself: no mask in either form.
    return attend(q, k, v)
  if method == 'mask':
    return attend(q, k, v, jnp.asarray(frame_causal_mask(num_frames, n))[None, None])
  # Frame t's queries over the keys and values of frames 0..t (static slices).
  return jnp.concatenate([attend(q[:, t * n:(t + 1) * n], k[:, :(t + 1) * n], v[:, :(t + 1) * n])
                          for t in range(num_frames)], axis=1)
