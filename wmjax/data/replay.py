"""A functional replay buffer of training windows (OWM, PAPER.md section 4).

A fixed-capacity ring buffer carried through `jit` as data, so it can live in a checkpointed
train state (`TrainState.extra`): `init_buffer` from one example window, `insert` (jittable,
overwrites the oldest), `sample` (jittable, uniform over the filled entries) and `mix_batches`
to train on offline and buffer windows in one batch. Windows are dicts of arrays in the window
loader's layout (`wmjax.data.loader`), usually without pixels (rendered at sampling time).
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import struct

from wmjax.types import PRNGKey

Batch = dict[str, jax.Array]


@struct.dataclass
class ReplayBuffer:
  """A fixed-capacity ring buffer of windows (carried through jit as data).

  Attributes:
    data: dict of (C, ...) arrays, one leading entry per window; C = capacity.
    size: () int32, number of filled entries (<= C). Entries 0 .. size-1 are filled.
    cursor: () int32, the entry the next inserted window goes to (always in [0, C)).
  """

  data: dict[str, jax.Array]
  size: jax.Array
  cursor: jax.Array

  @property
  def capacity(self) -> int:
    """C, the static number of entries."""
    return int(jax.tree.leaves(self.data)[0].shape[0])


def _spec(x: Any) -> tuple[tuple[int, ...], Any]:
  return tuple(jnp.shape(x)), jnp.dtype(x.dtype)


def init_buffer(example: Mapping[str, Any], capacity: int) -> ReplayBuffer:
  """An empty buffer for windows shaped like `example`.

  Args:
    example: ONE window, a dict of arrays or `jax.ShapeDtypeStruct`s, e.g.
      {'state': (num_hist+1, S) float32, 'proprio': (num_hist+1, P) float32,
       'actions': (num_hist, frameskip*A) float32}.
    capacity: C >= 1, static.

  Returns:
    A `ReplayBuffer` with zero-filled (C, ...) data, size 0 and cursor 0.
  """
  if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
    raise ValueError(f'capacity must be a Python int >= 1; got {capacity!r}.')
  if not isinstance(example, Mapping) or not example:
    raise ValueError(f'example must be a non-empty dict of per-window arrays; got {example!r}.')
  data = {}
  for k, x in example.items():
    shape, dtype = _spec(x)
    data[k] = jnp.zeros((capacity,) + shape, dtype)
  return ReplayBuffer(data=data, size=jnp.zeros((), jnp.int32), cursor=jnp.zeros((), jnp.int32))


def _check_windows(buffer: ReplayBuffer, windows: Mapping[str, jax.Array]) -> int:
  """Checks keys, per-window shapes and dtypes against the buffer; returns N."""
  want, got = sorted(buffer.data), sorted(windows) if isinstance(windows, Mapping) else None
  if want != got:
    raise ValueError(f'windows must have keys {want}; got {got}.')
  counts = {k: jnp.shape(v)[0] if jnp.ndim(v) else None for k, v in windows.items()}
  for k in want:
    b_shape, b_dtype = _spec(buffer.data[k])
    w_shape, w_dtype = _spec(windows[k])
    if w_shape[1:] != b_shape[1:] or w_dtype != b_dtype:
      raise ValueError(
          f"windows['{k}'] must be (N, {', '.join(map(str, b_shape[1:]))}) {b_dtype}; got "
          f'{w_shape} {w_dtype}.')
  if len(set(counts.values())) != 1:
    raise ValueError(f'windows disagree on the number of windows N: {counts}.')
  return int(counts[want[0]])


def insert(buffer: ReplayBuffer, windows: Mapping[str, jax.Array]) -> ReplayBuffer:
  """Writes N windows at the cursor, wrapping around and overwriting the oldest (jittable).

  The result is the same as inserting the windows one at a time in order. When N exceeds the
  capacity C, only the last C windows are kept (the earlier ones would have been overwritten
  within this same insert).

  Args:
    buffer: the buffer.
    windows: dict with the buffer's keys of (N, ...) arrays (N static; N = 0 is a no-op).

  Returns:
    The updated buffer: size = min(size + N, C), cursor = (cursor + N) mod C.

  Raises:
    ValueError: keys, per-window shapes or dtypes differ from the buffer's, or N is not the
      same for every key.
  """
  n = _check_windows(buffer, windows)
  c = buffer.capacity
  if n == 0:
    return buffer
  keep = min(n, c)
  # Window j of the last `keep` goes where a one-by-one insert would leave it.
  idx = (buffer.cursor + (n - keep) + jnp.arange(keep, dtype=jnp.int32)) % c  # distinct
  data = {k: buffer.data[k].at[idx].set(windows[k][n - keep:]) for k in buffer.data}
  return ReplayBuffer(
      data=data,
      size=jnp.minimum(buffer.size + n, c).astype(jnp.int32),
      cursor=((buffer.cursor + n) % c).astype(jnp.int32))


def sample(buffer: ReplayBuffer, key: PRNGKey, batch_size: int) -> Batch:
  """Windows drawn uniformly with replacement from the filled entries (jittable).

  Args:
    buffer: the buffer.
    key: PRNG key.
    batch_size: B, static.

  Returns:
    dict of (B, ...) arrays.

  Raises:
    ValueError: the buffer is known to be empty (a concrete size of 0, outside jit). Inside jit
      the size cannot be checked: sampling an empty buffer then returns B copies of entry 0,
      which holds zeros (check `buffer.size` before sampling).
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f'batch_size must be a Python int >= 1; got {batch_size!r}.')
  if not isinstance(buffer.size, jax.core.Tracer) and int(buffer.size) == 0:
    raise ValueError('Cannot sample from an empty replay buffer (size 0); insert windows first.')
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
  return {k: v[idx] for k, v in buffer.data.items()}


def mix_batches(offline: Mapping[str, jax.Array], online: Mapping[str, jax.Array]) -> Batch:
  """Concatenates two window batches along the batch axis (offline first).

  Mix before `add_pixels` (buffer windows carry no pixels), or render both.

  Args:
    offline: dict of (B1, ...) arrays.
    online: dict with the same keys of (B2, ...) arrays, equal per-window shapes and dtypes.

  Returns:
    dict of (B1 + B2, ...) arrays.
  """
  if sorted(offline) != sorted(online):
    raise ValueError(f'Batches must have the same keys; got offline {sorted(offline)} and '
                     f'online {sorted(online)} (render pixels on both or on neither).')
  for k in offline:
    a, b = _spec(offline[k]), _spec(online[k])
    if len(a[0]) < 1 or a[0][1:] != b[0][1:] or a[1] != b[1]:
      raise ValueError(f"Batches disagree on '{k}': offline {a[0]} {a[1]}, online {b[0]} {b[1]} "
                       '(only the leading batch axis may differ).')
  return {k: jnp.concatenate([offline[k], online[k]], axis=0) for k in offline}
