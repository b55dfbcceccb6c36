"""Offline datasets: format, atomic writes, validation, windows, rollouts, generation."""

import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import wall as wall_config
from wmjax import data as data_lib
from wmjax import io
from wmjax.data import dataset as dataset_lib
from wmjax.data import loader as loader_lib
from wmjax.envs import base
from wmjax.envs import execution
from wmjax.experiment import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# A tiny fake task: a point in [0, 10]^2 moved by its action, plus a step counter in the state.


class PointEnv(base.Env):
  name = 'point'
  state_size = 3    # x, y, t
  proprio_size = 2  # x, y
  action_size = 2
  dt = 0.1

  def _state(self, vec):
    vec = jnp.asarray(vec, jnp.float32)
    return base.State(data=vec, obs={'state': vec, 'proprio': vec[:2]}, reward=jnp.zeros(()),
                      done=jnp.zeros(()))

  def reset(self, key):
    return self._state(jnp.concatenate([jax.random.uniform(key, (2,), maxval=10.0),
                                        jnp.zeros(1)]))

  def reset_to(self, state_vector):
    return self._state(state_vector)

  def step(self, state, action):
    a = jnp.clip(action, self.action_low, self.action_high)
    return self._state(state.data + jnp.concatenate([a, jnp.ones(1)]))

  def state_vector(self, state):
    return state.data

  def proprio(self, state):
    return state.data[:2]

  def render(self, state_vector, size=64):
    c = (jnp.arange(size) + 0.5) * 10.0 / size
    blob = jnp.exp(-((c[None, :] - state_vector[0])**2 + (c[:, None] - state_vector[1])**2))
    return jnp.stack([blob, 0.5 * blob, jnp.zeros_like(blob)], -1)

  def success(self, state_vector, goal):
    return self.distance(state_vector, goal) < 0.5

  def distance(self, state_vector, goal):
    return jnp.linalg.norm(state_vector[:2] - goal[:2])

  def sample_problem(self, key):
    k1, k2 = jax.random.split(key)
    return self.reset(k1).data, self.reset(k2).data

  @property
  def action_low(self):
    return -jnp.ones(2)

  @property
  def action_high(self):
    return jnp.ones(2)


class UniformPolicy:
  """Actions uniform in [-1.5, 1.5] (so clipping matters); pstate counts steps."""

  def init(self, key, env_state):
    del key, env_state  # Unused.
    return jnp.zeros((), jnp.int32)

  def act(self, pstate, env_state, key):
    del env_state  # Unused.
    return jax.random.uniform(key, (2,), minval=-1.5, maxval=1.5), pstate + 1


def _cumsum_dataset(n=6, t=20, a=2, seed=0):
  """state_t = sum of the raw actions before t; proprio = state + 100."""
  rng = np.random.default_rng(seed)
  actions = rng.normal(0.3, 2.0, (n, t, a)).astype(np.float32)
  states = np.concatenate([np.zeros((n, 1, a)), np.cumsum(actions, axis=1, dtype=np.float64)],
                          axis=1).astype(np.float32)
  return states, states + 100.0, actions


def _write(path, **kw):
  states, proprio, actions = _cumsum_dataset(**kw)
  return dataset_lib.write_dataset(path, states, proprio, actions, task='point',
                                   policy='random', seed=3, generation={'n': states.shape[0]})


# ---------------------------------------------------------------------------------------------
# Format and validation.


def test_round_trip(tmp_path):
  path = str(tmp_path / 'ds')
  states, proprio, actions = _cumsum_dataset()
  meta = dataset_lib.write_dataset(path, states, proprio, actions, task='point', policy='random',
                                   seed=3, generation={'a': (1, 2)}, config={'x': 1})
  ds = dataset_lib.load_dataset(path, task='point')
  np.testing.assert_array_equal(ds.states, states)
  np.testing.assert_array_equal(ds.proprio, proprio)
  np.testing.assert_array_equal(ds.actions, actions)
  assert ds.meta == meta
  assert sorted(os.listdir(path)) == ['arrays.npz', 'meta.json']
  assert os.listdir(tmp_path) == ['ds']  # No temporary directory left behind.
  assert meta['format'] == 'wmjax-dataset' and meta['format_version'] == 1
  assert (meta['num_trajectories'], meta['trajectory_length']) == (6, 20)
  assert (meta['state_size'], meta['proprio_size'], meta['action_size']) == (2, 2, 2)
  assert meta['generation'] == {'a': [1, 2]} and meta['config'] == {'x': 1}
  assert meta['policy'] == 'random' and meta['seed'] == 3 and meta['created']
  np.testing.assert_allclose(meta['stats']['action_mean'], actions.reshape(-1, 2).mean(0),
                             rtol=1e-5)
  np.testing.assert_allclose(meta['stats']['proprio_std'], proprio.reshape(-1, 2).std(0),
                             rtol=1e-5)
  assert dataset_lib.matches_generation(path, {'a': (1, 2)})
  assert not dataset_lib.matches_generation(path, {'a': (1, 3)})


def test_stats_guard_constant_channel():
  states = np.zeros((2, 4, 3), np.float32)
  actions = np.ones((2, 3, 2), np.float32)
  stats = dataset_lib.compute_stats(states, states[..., :2], actions)
  assert stats['state_std'] == [1.0, 1.0, 1.0] and stats['action_std'] == [1.0, 1.0]
  assert stats['action_mean'] == [1.0, 1.0]


def test_write_rejects_bad_input(tmp_path):
  s, p, a = _cumsum_dataset()
  with pytest.raises(ValueError, match='states and proprio'):
    dataset_lib.write_dataset(str(tmp_path / 'd'), s[:, :-1], p, a, task='t', policy='p', seed=0)
  a = a.copy()
  a[0, 0, 0] = np.nan
  with pytest.raises(ValueError, match='non-finite'):
    dataset_lib.write_dataset(str(tmp_path / 'd'), s, p, a, task='t', policy='p', seed=0)
  assert not os.listdir(tmp_path)


def test_overwrite(tmp_path):
  path = str(tmp_path / 'ds')
  _write(path, n=4)
  with pytest.raises(FileExistsError, match='overwrite'):
    _write(path, n=5)
  s, p, a = _cumsum_dataset(n=5)
  dataset_lib.write_dataset(path, s, p, a, task='point', policy='random', seed=0, overwrite=True)
  assert dataset_lib.load_dataset(path).num_trajectories == 5
  assert os.listdir(tmp_path) == ['ds']


def test_crash_mid_write_leaves_nothing_readable(tmp_path, monkeypatch):
  path = str(tmp_path / 'ds')

  # An exception between writing the files and renaming: the writer cleans up.
  def fail(*args):
    raise KeyboardInterrupt
  with monkeypatch.context() as m:
    m.setattr(dataset_lib.os, 'rename', fail)
    with pytest.raises(KeyboardInterrupt):
      _write(path)
  assert not os.listdir(tmp_path)

  # A hard crash (process killed just before the rename) leaves a temporary directory.
  code = ('import os, sys; '  # Run from the checkout: `tests` is a namespace package there.
          'from tests import test_data as t; from wmjax.data import dataset as d; '
          'd.os.rename = lambda *a: os._exit(7); t._write(sys.argv[1])')
  proc = subprocess.run([sys.executable, '-c', code, path], capture_output=True, cwd=ROOT,
                        text=True, check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 7, proc.stderr
  (leftover,) = os.listdir(tmp_path)
  assert leftover.startswith('.ds.tmp-')
  assert os.path.isfile(tmp_path / leftover / 'meta.json')  # Complete, yet not a dataset:
  with pytest.raises(FileNotFoundError, match='No dataset directory'):
    dataset_lib.load_dataset(path)
  with pytest.raises(ValueError, match='temporary'):
    dataset_lib.load_dataset(str(tmp_path / leftover))
  assert not dataset_lib.matches_generation(path, {'n': 6})
  # The next write removes the dead writer's directory.
  _write(path)
  assert os.listdir(tmp_path) == ['ds']


@pytest.mark.parametrize('verify', [True, False])
def test_corrupt_and_truncated_arrays(tmp_path, verify):
  path = str(tmp_path / 'ds')
  _write(path)
  arrays = os.path.join(path, 'arrays.npz')
  raw = open(arrays, 'rb').read()
  flipped = bytearray(raw)
  for i in range(len(raw) // 2, len(raw) // 2 + 8):
    flipped[i] ^= 0xFF
  with open(arrays, 'wb') as f:
    f.write(flipped)
  with pytest.raises(ValueError, match='corrupt'):
    dataset_lib.load_dataset(path, verify=verify)
  with open(arrays, 'wb') as f:
    f.write(raw[:len(raw) // 2])
  with pytest.raises(ValueError, match='corrupt or truncated'):
    dataset_lib.load_dataset(path, verify=verify)


def test_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='No dataset directory'):
    dataset_lib.load_dataset(str(tmp_path / 'nothing'))
  path = str(tmp_path / 'ds')
  _write(path)
  os.remove(os.path.join(path, 'arrays.npz'))
  with pytest.raises(FileNotFoundError, match='arrays.npz is missing'):
    dataset_lib.load_dataset(path)
  os.remove(os.path.join(path, 'meta.json'))
  with pytest.raises(FileNotFoundError, match='meta.json is missing'):
    dataset_lib.load_dataset(path)


def _edit_meta(path, resign=True, **changes):
  """Edits meta.json; `resign` recomputes its checksum (else the edit looks like damage)."""
  meta_path = os.path.join(path, 'meta.json')
  with open(meta_path) as f:
    meta = json.load(f)
  meta.update(changes)
  if resign and 'meta_sha256' in meta:
    meta['meta_sha256'] = dataset_lib.meta_digest(meta)
  with open(meta_path, 'w') as f:
    json.dump(meta, f)


def test_meta_mismatches(tmp_path):
  path = str(tmp_path / 'ds')
  _write(path)
  with pytest.raises(ValueError, match="task 'point', expected task 'wall'"):
    dataset_lib.load_dataset(path, task='wall')
  with pytest.raises(ValueError, match='action_size 2, expected 3'):
    dataset_lib.load_dataset(path, expected={'action_size': 3})
  with pytest.raises(ValueError, match='num_hist \\* frameskip = 25'):
    dataset_lib.load_dataset(path, expected={'num_hist': 5, 'frameskip': 5})
  with pytest.raises(ValueError, match='image_size'):
    dataset_lib.load_dataset(path, expected={'image_size': 0})
  dataset_lib.load_dataset(path, expected={'action_size': 2, 'state_size': 2, 'num_hist': 4,
                                           'frameskip': 5, 'image_size': 224})
  _edit_meta(path, num_trajectories=7)
  with pytest.raises(ValueError, match='states has shape \\(6, 21, 2\\).*\\(7, 21, 2\\)'):
    dataset_lib.load_dataset(path)
  _edit_meta(path, num_trajectories=6, format_version=2)
  with pytest.raises(ValueError, match='format version 2 is not supported'):
    dataset_lib.load_dataset(path)
  _edit_meta(path, format_version=1, format='something-else')
  with pytest.raises(ValueError, match='not a wmjax dataset'):
    dataset_lib.load_dataset(path)
  with open(os.path.join(path, 'meta.json'), 'w') as f:
    f.write('{"format": ')
  with pytest.raises(ValueError, match='not valid JSON'):
    dataset_lib.load_dataset(path)


def test_edited_normalisation_stats_are_refused(tmp_path):
  path = str(tmp_path / 'ds')
  meta = _write(path)
  stats = dict(meta['stats'], action_std=[s * 10 for s in meta['stats']['action_std']])
  _edit_meta(path, resign=False, stats=stats)
  for read in (dataset_lib.read_meta, dataset_lib.load_dataset):
    with pytest.raises(ValueError, match=r'meta.json was edited or damaged.*--overwrite'):
      read(path)
  # A dataset written before meta.json had a checksum: its stats are checked against the arrays.
  _edit_meta(path, resign=False, meta_sha256=None)
  with open(os.path.join(path, 'meta.json')) as f:
    legacy = {k: v for k, v in json.load(f).items() if k != 'meta_sha256'}
  with open(os.path.join(path, 'meta.json'), 'w') as f:
    json.dump(legacy, f)
  with pytest.raises(ValueError, match='stats.action_std does not match the arrays'):
    dataset_lib.load_dataset(path)
  _edit_meta(path, stats=dict(stats, action_std=[float('nan'), 1.0]))
  with pytest.raises(ValueError, match=r'stats.action_std = \[nan, 1.0\] must be finite and > 0'):
    dataset_lib.read_meta(path)


def test_nonfinite_arrays_are_refused_at_load(tmp_path):
  # A NaN in `states` with arrays_sha256 recomputed, so only the finite check can catch it.
  path = str(tmp_path / 'ds')
  _write(path)
  arrays_path = os.path.join(path, 'arrays.npz')
  with np.load(arrays_path) as z:
    arrays = {k: z[k] for k in z.files}
  arrays['states'][2, 5, 1] = np.nan
  with open(arrays_path, 'wb') as f:
    np.savez(f, **arrays)
  _edit_meta(path, arrays_sha256=io.sha256_file(arrays_path))
  with pytest.raises(ValueError, match=r'states holds 1 non-finite values \(first at trajectory 2, '
                     r'step 5, channel 1\)'):
    dataset_lib.load_dataset(path)


# ---------------------------------------------------------------------------------------------
# Windows.


def _arrays(n=6, t=20):
  states, proprio, actions = _cumsum_dataset(n=n, t=t)
  meta = {'stats': dataset_lib.compute_stats(states, proprio, actions)}
  return loader_lib.to_device(dataset_lib.Dataset(states, proprio, actions, meta))


@pytest.mark.parametrize('num_hist,frameskip', [(3, 5), (1, 5), (2, 1)])
def test_window_shapes_and_action_alignment(num_hist, frameskip):
  arrays = _arrays()
  batch = loader_lib.sample_windows(arrays, jax.random.key(0), 16, num_hist, frameskip)
  assert batch['state'].shape == (16, num_hist + 1, 2)
  assert batch['proprio'].shape == (16, num_hist + 1, 2)
  assert batch['actions'].shape == (16, num_hist, frameskip * 2)
  # state = cumulative sum of raw actions: frame k+1 - frame k = sum of model action k's
  # frameskip raw actions, in order.
  normalizer = execution.normalizer_from_stats(arrays.stats)
  raw = normalizer.denormalize_actions(batch['actions'])
  summed = raw.reshape(16, num_hist, frameskip, 2).sum(axis=2)
  np.testing.assert_allclose(jnp.diff(batch['state'], axis=1), summed, atol=1e-4)
  # proprio is normalised with the dataset's stats (proprio = state + 100 here).
  np.testing.assert_allclose(normalizer.denormalize_proprio(batch['proprio']),
                             batch['state'] + 100.0, atol=1e-4)


def test_window_contents_exact():
  arrays = _arrays()
  traj, start = jnp.array([4, 0]), jnp.array([7, 0])
  batch = loader_lib.gather_windows(arrays, traj, start, 2, 3)
  np.testing.assert_array_equal(batch['state'][0], arrays.states[4, jnp.array([7, 10, 13])])
  raw = execution.normalizer_from_stats(arrays.stats).denormalize_actions(batch['actions'])
  np.testing.assert_allclose(raw[0, 1], arrays.actions[4, 10:13].reshape(-1), atol=1e-5)
  np.testing.assert_allclose(raw[1, 0], arrays.actions[0, 0:3].reshape(-1), atol=1e-5)


def test_normalisation():
  arrays = _arrays(n=40, t=20)
  s = execution.normalizer_from_stats(arrays.stats)
  actions = s.normalize_actions(arrays.actions.reshape(40, 4, 10))  # frameskip 5
  np.testing.assert_allclose(actions.reshape(-1, 2).mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(actions.reshape(-1, 2).std(0), 1.0, atol=1e-4)
  np.testing.assert_allclose(s.denormalize_actions(actions),
                             arrays.actions.reshape(40, 4, 10), atol=1e-4)
  with pytest.raises(ValueError, match='multiple of the raw action size'):
    s.normalize_actions(jnp.zeros((3,)))


def test_windows_reject_short_trajectories():
  with pytest.raises(ValueError, match='shorter than one window'):
    loader_lib.sample_windows(_arrays(t=10), jax.random.key(0), 4, 3, 5)


def test_sampling_covers_every_start_and_does_not_retrace():
  arrays = _arrays(n=2, t=8)
  starts = set()
  loader_lib.sample_windows(arrays, jax.random.key(0), 8, 1, 5)
  compiled = loader_lib.sample_windows._cache_size()
  for i in range(30):
    batch = loader_lib.sample_windows(arrays, jax.random.key(i), 8, 1, 5)
    starts |= {tuple(w.ravel()) for w in np.asarray(batch['state']).round(4)}
  # 2 trajectories x 4 starts (0..3) = 8 distinct windows.
  assert len(starts) == 8
  assert loader_lib.sample_windows._cache_size() == compiled


def test_split_disjoint_by_trajectory():
  states, proprio, actions = _cumsum_dataset(n=20)
  ds = dataset_lib.Dataset(states, proprio, actions,
                           {'stats': dataset_lib.compute_stats(states, proprio, actions)})
  train, val = loader_lib.split(ds, 0.25, seed=1)
  ti, vi = train.meta['trajectory_indices'], val.meta['trajectory_indices']
  assert len(vi) == 5 and len(ti) == 15 and not set(ti) & set(vi)
  assert sorted(ti + vi) == list(range(20))
  np.testing.assert_array_equal(val.actions, actions[vi])
  np.testing.assert_array_equal(train.states, states[ti])
  assert train.meta['stats'] == val.meta['stats'] == ds.meta['stats']
  assert loader_lib.split(ds, 0.25, seed=1)[1].meta['trajectory_indices'] == vi
  assert loader_lib.split(ds, 0.25, seed=2)[1].meta['trajectory_indices'] != vi
  assert loader_lib.split(ds, 0.01, seed=0)[1].num_trajectories == 1
  assert loader_lib.split(ds, 0.0, seed=0)[1].num_trajectories == 0
  with pytest.raises(ValueError, match='val_fraction'):
    loader_lib.split(ds, 1.0, seed=0)


def test_iterate_windows_is_deterministic_and_complete():
  arrays = _arrays(n=3, t=20)
  traj, start = loader_lib.window_index(3, 20, 3, 5)
  assert len(traj) == 3 * 2  # starts 0 and 5 (a window spans 15 steps).
  batches = list(loader_lib.iterate_windows(arrays, 4, 3, 5))
  assert [b['state'].shape[0] for b in batches] == [4, 2]
  first = np.concatenate([b['state'][:, 0] for b in batches])
  np.testing.assert_array_equal(first, arrays.states[traj, start])
  again = list(loader_lib.iterate_windows(arrays, 4, 3, 5))
  np.testing.assert_array_equal(again[0]['actions'], batches[0]['actions'])
  sub = list(loader_lib.iterate_windows(arrays, 8, 3, 5, stride=1, max_windows=5))
  assert sub[0]['state'].shape[0] == 5


def test_add_pixels_split_and_windows():
  env = PointEnv()
  states, proprio, actions = _cumsum_dataset(n=10, t=20)
  ds = dataset_lib.Dataset(states, proprio, actions,
                           {'stats': dataset_lib.compute_stats(states, proprio, actions),
                            'task': 'point', 'num_trajectories': 10, 'trajectory_length': 20,
                            'state_size': 2, 'proprio_size': 2, 'action_size': 2})
  sizes = dict(proprio_size=env.proprio_size, action_size=env.action_size, num_hist=3,
               frameskip=5, image_size=16)
  with pytest.raises(ValueError, match='state_size 2, expected 3'):
    dataset_lib.check_compatible(ds.meta, 'point', state_size=env.state_size, **sizes)
  env.state_size = 2  # The synthetic data has S = 2.
  dataset_lib.check_compatible(ds.meta, 'point', state_size=env.state_size, **sizes)
  train_ds, val_ds = loader_lib.split(ds, 0.2, seed=0)
  train, val = loader_lib.to_device(train_ds), loader_lib.to_device(val_ds)
  assert train.states.shape[0] == 8 and val.states.shape[0] == 2
  sample = jax.jit(lambda a, k: loader_lib.add_pixels(
      env, loader_lib.sample_windows(a, k, 4, 3, 5), 16))
  batch = sample(train, jax.random.key(0))
  assert batch['pixels'].shape == (4, 4, 16, 16, 3) and batch['pixels'].dtype == jnp.uint8
  want = jax.vmap(jax.vmap(lambda s: env.render(s, 16)))(batch['state'])
  np.testing.assert_array_equal(batch['pixels'], jnp.round(jnp.clip(want, 0, 1) * 255))
  val_batches = list(loader_lib.iterate_windows(val, 4, 3, 5, env=env, image_size=16))
  assert sum(b['pixels'].shape[0] for b in val_batches) == 2 * 2
  assert set(val_batches[0]) == {'state', 'proprio', 'actions', 'pixels'}


# ---------------------------------------------------------------------------------------------
# Rollouts.


def test_collect_fake_env():
  env, policy = PointEnv(), UniformPolicy()
  out = data_lib.collect(env, policy, jax.random.key(0), 5, 6, batch_size=2, progress=False)
  assert out['states'].shape == (5, 7, 3) and out['proprio'].shape == (5, 7, 2)
  assert out['actions'].shape == (5, 6, 2) and out['actions'].dtype == np.float32
  assert np.abs(out['actions']).max() <= 1.0 and np.abs(out['actions']).max() > 0.9  # Clipped.
  np.testing.assert_allclose(np.diff(out['states'][..., :2], axis=1), out['actions'], atol=1e-5)
  np.testing.assert_array_equal(out['states'][0, :, 2], np.arange(7))
  np.testing.assert_array_equal(out['proprio'], out['states'][..., :2])
  # Trajectory i depends only on fold_in(key, i): batch size and count do not matter.
  more = data_lib.collect(env, policy, jax.random.key(0), 8, 6, batch_size=8, progress=False)
  for k in out:
    np.testing.assert_allclose(more[k][:5], out[k], atol=1e-6)
  assert not np.allclose(more['actions'][0], more['actions'][1])


# ---------------------------------------------------------------------------------------------
# Configs and the generation binary.


@pytest.mark.parametrize('task,num_hist,paper_size', [
    ('pusht', 3, (18500, 150)), ('pointmaze', 3, (2000, 100)), ('wall', 1, (1920, 50))])
def test_configs(task, num_hist, paper_size):
  mod = importlib.import_module(f'experiments.configs.{task}')
  for variant in ('test', 'cpu', 'gpu', 'paper'):
    c = mod.get_config(variant)
    assert c.task == task and c.num_hist == num_hist and c.frameskip == 5
    assert c.data.trajectory_length >= c.num_hist * c.frameskip
  paper = mod.get_config('paper').data
  assert (paper.num_trajectories, paper.trajectory_length) == paper_size
  assert mod.get_config('test').data.num_trajectories <= 16
  with pytest.raises(ValueError, match='Unknown config variant'):
    mod.get_config('huge')


def test_generate_data_end_to_end(tmp_path, capsys):
  config = wall_config.get_config('test')
  workdir = str(tmp_path / 'run')
  summary = generate.generate(config, workdir, progress=False)
  assert not summary['skipped'] and 0.0 <= summary['door_crossing_fraction'] <= 1.0
  ds = data_lib.load_dataset(os.path.join(workdir, 'dataset'), task='wall',
                             expected={'action_size': 2, 'state_size': 2, 'proprio_size': 2,
                                       'num_hist': 1, 'frameskip': 5})
  assert ds.states.shape == (8, 21, 2) and ds.meta['config']['variant'] == 'test'
  assert os.path.getsize(os.path.join(workdir, 'dataset_preview.png')) > 100
  # Same settings: skipped. Other settings: refused without overwrite.
  assert generate.generate(config, workdir, progress=False)['skipped']
  assert 'nothing to do' in capsys.readouterr().out
  with config.unlocked():
    config.data.num_trajectories = 6
  with pytest.raises(FileExistsError, match='overwrite'):
    generate.generate(config, workdir, progress=False)
  generate.generate(config, workdir, overwrite=True, progress=False, preview=False)
  assert data_lib.load_dataset(os.path.join(workdir, 'dataset')).num_trajectories == 6


def test_interrupted_overwrite_leaves_nothing_behind(tmp_path):
  config = wall_config.get_config('test')
  workdir = str(tmp_path / 'run')
  generate.generate(config, workdir, progress=False, preview=False)
  # What `--overwrite` killed mid-write leaves: a temporary dataset of a dead writer.
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  stale = os.path.join(workdir, f'.dataset.tmp-{proc.pid}-{"ab" * 16}')
  os.makedirs(stale)
  with open(os.path.join(stale, 'arrays.npz'), 'wb') as f:
    f.write(b'\0' * (1 << 20))
  # Even a run with nothing to do removes it (and its lock is gone when it returns).
  assert generate.generate(config, workdir, progress=False, preview=False)['skipped']
  assert sorted(os.listdir(workdir)) == ['dataset']


def test_generate_data_cli(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, 'experiments', 'generate_data.py'),
         f'--config={ROOT}/experiments/configs/wall.py:test', f'--workdir={tmp_path}']
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             WMJAX_JAX_CACHE=os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache')))
  first = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
  assert first.returncode == 0, first.stderr
  assert 'door_crossing_fraction' in first.stdout
  second = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
  assert second.returncode == 0 and 'nothing to do' in second.stdout


@pytest.mark.slow
@pytest.mark.parametrize('task', ['pointmaze', 'pusht'])
def test_generate_data_other_tasks(tmp_path, task):
  config = importlib.import_module(f'experiments.configs.{task}').get_config('test')
  summary = generate.generate(config, str(tmp_path), progress=False)
  key = 'cell_coverage' if task == 'pointmaze' else 'contact_step_fraction'
  assert 0.0 < summary[key] <= 1.0
  ds = data_lib.load_dataset(os.path.join(str(tmp_path), 'dataset'), task=task,
                             expected={'num_hist': config.num_hist, 'frameskip': 5})
  env = __import__('wmjax.envs', fromlist=['load']).load(task)
  train, _ = data_lib.split(ds, 0.25, seed=0)
  batch = data_lib.add_pixels(env, data_lib.sample_windows(
      data_lib.to_device(train), jax.random.key(0), 2, config.num_hist, 5), 16)
  assert batch['pixels'].shape == (2, config.num_hist + 1, 16, 16, 3)
  assert batch['proprio'].shape == (2, config.num_hist + 1, env.proprio_size)
