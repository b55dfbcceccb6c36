"""The replay buffer of OWM windows (wmjax.data.replay): ring insertion, sampling, mixing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wmjax.data import replay


def _ids(n, start=0):
  ids = jnp.arange(start, start + n, dtype=jnp.float32)
  return {'state': jnp.broadcast_to(ids[:, None, None], (n, 2, 2)),
          'actions': jnp.broadcast_to(ids[:, None, None], (n, 1, 10))}


def test_buffer_wraps_and_overwrites_oldest():
  example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), _ids(1))
  buf = replay.init_buffer(example, 5)
  assert buf.capacity == 5 and int(buf.size) == 0 and int(buf.cursor) == 0
  ins = jax.jit(replay.insert)
  buf = ins(buf, _ids(3))
  assert (int(buf.size), int(buf.cursor)) == (3, 3)
  buf = ins(buf, _ids(4, start=3))  # ids 3..6; 5 and 6 overwrite 0 and 1
  assert (int(buf.size), int(buf.cursor)) == (5, 2)
  np.testing.assert_array_equal(buf.data['state'][:, 0, 0], [5, 6, 2, 3, 4])
  np.testing.assert_array_equal(buf.data['actions'][:, 0, 0], [5, 6, 2, 3, 4])
  # More than the capacity at once = one at a time: the last C survive.
  big = replay.insert(replay.insert(replay.init_buffer(example, 5), _ids(2)), _ids(12, start=2))
  one = replay.insert(replay.init_buffer(example, 5), _ids(2))
  for i in range(2, 14):
    one = ins(one, _ids(1, start=i))
  np.testing.assert_array_equal(big.data['state'], one.data['state'])
  assert (int(big.size), int(big.cursor)) == (5, 14 % 5) == (int(one.size), int(one.cursor))
  assert set(np.asarray(big.data['state'][:, 0, 0]).tolist()) == set(range(9, 14))


def test_buffer_samples_only_filled_entries():
  example = jax.tree.map(lambda x: x[0], _ids(1))
  buf = replay.insert(replay.init_buffer(example, 10), _ids(3, start=1))
  with pytest.raises(ValueError, match='empty'):
    replay.sample(replay.init_buffer(example, 10), jax.random.key(0), 4)
  batch = jax.jit(replay.sample, static_argnums=2)(buf, jax.random.key(0), 200)
  assert batch['state'].shape == (200, 2, 2) and batch['actions'].shape == (200, 1, 10)
  assert set(np.asarray(batch['state'][:, 0, 0]).tolist()) == {1.0, 2.0, 3.0}


def test_buffer_rejects_mismatches():
  buf = replay.init_buffer(jax.tree.map(lambda x: x[0], _ids(1)), 4)
  with pytest.raises(ValueError, match=r"windows\['state'\] must be \(N, 2, 2\) float32; got "
                                       r'\(3, 3, 2\)'):
    replay.insert(buf, dict(_ids(3), state=jnp.zeros((3, 3, 2))))
  with pytest.raises(ValueError, match="keys \\['actions', 'state'\\]; got \\['actions'\\]"):
    replay.insert(buf, {'actions': jnp.zeros((3, 1, 10))})
  with pytest.raises(ValueError, match='number of windows'):
    replay.insert(buf, dict(_ids(3), actions=jnp.zeros((2, 1, 10))))
  with pytest.raises(ValueError, match='int32'):
    replay.insert(buf, dict(_ids(3), state=jnp.zeros((3, 2, 2), jnp.int32)))
  with pytest.raises(ValueError, match='capacity'):
    replay.init_buffer(jax.tree.map(lambda x: x[0], _ids(1)), 0)


def test_mix_batches():
  a, b = _ids(3), _ids(5, start=10)
  mixed = replay.mix_batches(a, b)
  assert mixed['state'].shape == (8, 2, 2) and mixed['actions'].shape == (8, 1, 10)
  np.testing.assert_array_equal(mixed['state'][:, 0, 0], [0, 1, 2, 10, 11, 12, 13, 14])
  with pytest.raises(ValueError, match='same keys'):
    replay.mix_batches(a, dict(b, pixels=jnp.zeros((5, 2, 8, 8, 3), jnp.uint8)))
  with pytest.raises(ValueError, match="disagree on 'actions'"):
    replay.mix_batches(a, dict(b, actions=jnp.zeros((5, 2, 10))))
