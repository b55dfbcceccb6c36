"""Shared pieces of the subprocess checks: a tiny Wall world model, batches, comparisons.

Imported by the scripts in this folder (run as modules from the checkout, `python -m
tests.parallel.<script>`) after XLA_FLAGS is set (and, for several processes, jax.distributed
started); importing it starts nothing.
"""

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import wall
from wmjax import data as data_lib
from wmjax import envs
from wmjax import training

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def use_test_cache() -> None:
  """The persistent compilation cache of tests/conftest.py."""
  jax.config.update('jax_compilation_cache_dir', os.environ.get(
      'WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)


def tiny_setup():
  """(config, env, model, optimizer, initial TrainState): Wall's `test` world model (identity
  encoder, one block); the state holds host arrays (safe to pass to steps that donate it)."""
  config = wall.get_config('test')
  env = envs.load('wall')
  model = training.build_world_model(training.world_model_kwargs(config, env))
  optimizer = training.make_optimizer(config.train)
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  params = model.init(jax.random.key(0), obs)
  state = jax.device_get(training.create_train_state(params, optimizer))
  return config, env, model, optimizer, state


def random_batch(seed: int, batch_size: int, num_hist: int = 1) -> dict[str, np.ndarray]:
  """A host training batch for Wall (S = P = 2, model actions of 10)."""
  rng = np.random.default_rng(seed)
  f = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return {'state': 30.0 + 10.0 * f(batch_size, num_hist + 1, 2),
          'proprio': f(batch_size, num_hist + 1, 2),
          'actions': f(batch_size, num_hist, 10)}


def random_arrays(seed: int, num: int = 8, length: int = 20) -> data_lib.WindowArrays:
  """A small random Wall dataset on the host (N trajectories of `length` steps)."""
  rng = np.random.default_rng(seed)
  states = (32.0 + 10.0 * rng.normal(size=(num, length + 1, 2))).astype(np.float32)
  actions = rng.normal(size=(num, length, 2)).astype(np.float32)
  stats = data_lib.Stats(np.zeros(2, np.float32), np.ones(2, np.float32),
                         np.full(2, 32.0, np.float32), np.full(2, 10.0, np.float32),
                         np.full(2, 32.0, np.float32), np.full(2, 10.0, np.float32))
  return data_lib.WindowArrays(states, states.copy(), actions, stats)


def max_rel_diff(a, b) -> float:
  """max over leaves of max|a - b| / max(max|b|, 1e-12)."""
  diffs = jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))
                         / max(float(np.max(np.abs(np.asarray(y, np.float64)))), 1e-12)), a, b)
  return max(jax.tree.leaves(diffs), default=0.0)


def fingerprint(tree) -> str:
  """sha256 of every leaf's bytes, in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:16]
