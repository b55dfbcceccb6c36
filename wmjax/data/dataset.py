"""Offline datasets on disk: format, atomic writer, validating reader.

Datasets store low-dimensional trajectories, never pixels. Every task's image is a pure
function of its state vector (`env.render(state, size)`), so the loader renders frames
on device at whatever image size a config asks for. The paper-scale PushT and PointMaze
datasets (PAPER.md section 5) are therefore megabytes rather than tens of gigabytes, and
one dataset serves the 64 px CPU path and the 224 px paper path alike.

Format (version 1): a directory `<path>/` holding exactly

  arrays.npz  uncompressed numpy archive (no pickles):
                states   (N, T+1, S) float32  state vectors s_0 .. s_T,
                proprio  (N, T+1, P) float32  proprio vectors p_0 .. p_T,
                actions  (N, T, A)   float32  raw executed (clipped) actions; action t
                                              leads from s_t to s_{t+1}.
  meta.json   format name 'wmjax-dataset', format_version 1, task, num_trajectories (N),
              trajectory_length (T), state_size (S), proprio_size (P), action_size (A),
              policy, seed, generation (the fields that determine the data), config (a
              snapshot of the generating config), stats (action/proprio/state mean and std
              over the whole dataset, std floored to 1 where it is ~0), arrays_sha256,
              created (UTC, ISO 8601), wmjax_version, meta_sha256 (the sha256 of the other
              entries, so an edited or damaged meta.json, e.g. its normalisation stats, is
              refused; datasets written before it existed have their stats recomputed from the
              arrays instead).

Every reader checks the arrays (against arrays_sha256) and, at load, that every value is finite.

Writes are atomic: both files go to a temporary sibling directory `.<name>.tmp-<pid>-<hex>`,
are fsynced, and the directory is renamed into place, so a reader sees either no dataset
or a complete one. A temporary directory left by a crashed writer is never read as a
dataset and is removed by the next write to the same path (and by any binary that takes the
workdir lock, see wmjax/io.py).
"""

import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import uuid
import zipfile
from typing import Any, Mapping, NamedTuple

import numpy as np

from wmjax import io

FORMAT_NAME = 'wmjax-dataset'
FORMAT_VERSION = 1
META_FILE = 'meta.json'
ARRAYS_FILE = 'arrays.npz'
ARRAY_KEYS = ('states', 'proprio', 'actions')
_STD_FLOOR = 1e-6
META_SHA_KEY = 'meta_sha256'


class Dataset(NamedTuple):
  """A dataset in host memory.

  Attributes:
    states: (N, T+1, S) float32 state vectors.
    proprio: (N, T+1, P) float32 proprio vectors.
    actions: (N, T, A) float32 raw executed actions.
    meta: the parsed meta.json (see the module docstring).
  """

  states: np.ndarray
  proprio: np.ndarray
  actions: np.ndarray
  meta: dict[str, Any]

  @property
  def num_trajectories(self) -> int:
    return self.actions.shape[0]

  @property
  def trajectory_length(self) -> int:
    return self.actions.shape[1]


def _std(x: np.ndarray) -> np.ndarray:
  s = x.std(axis=0)
  return np.where(s < _STD_FLOOR, 1.0, s)


def compute_stats(states: np.ndarray, proprio: np.ndarray,
                  actions: np.ndarray) -> dict[str, list[float]]:
  """Normalisation statistics over every step of every trajectory.

  Args:
    states: (N, T+1, S). proprio: (N, T+1, P). actions: (N, T, A).

  Returns:
    {'action_mean': [A], 'action_std': [A], 'proprio_mean': [P], 'proprio_std': [P],
     'state_mean': [S], 'state_std': [S]} as float lists; a std below 1e-6 (a constant
    channel) is replaced by 1 so that normalising never divides by zero.
  """
  out = {}
  for name, x in (('action', actions), ('proprio', proprio), ('state', states)):
    flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    out[f'{name}_mean'] = flat.mean(axis=0).tolist()
    out[f'{name}_std'] = _std(flat).tolist()
  return out


def _wmjax_version() -> str:
  try:
    return importlib.metadata.version('wmjax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


_fsync_dir = io.fsync_dir
is_temporary = io.is_temporary


def clean_stale_temporaries(path: str) -> list[str]:
  """Removes temporary siblings of `path` left by writers that are no longer running.

  Returns:
    The removed directories.
  """
  parent, name = os.path.split(os.path.abspath(path))
  return io.clean_stale_temporaries(parent, recursive=False, name=name)


def meta_digest(meta: Mapping[str, Any]) -> str:
  """sha256 of a meta dict without its own 'meta_sha256' entry."""
  body = {k: v for k, v in meta.items() if k != META_SHA_KEY}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _to_jsonable(x: Any) -> Any:
  """Turns a config snapshot (ConfigDict, tuples, numpy scalars) into plain JSON values."""
  if hasattr(x, 'to_dict'):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): _to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_to_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  return repr(x)


def write_dataset(path: str, states: np.ndarray, proprio: np.ndarray, actions: np.ndarray,
                  *, task: str, policy: str, seed: int,
                  generation: Mapping[str, Any] | None = None,
                  config: Any = None, overwrite: bool = False) -> dict[str, Any]:
  """Writes a dataset atomically (see the module docstring for the format).

  Args:
    path: the dataset directory to create.
    states: (N, T+1, S) state vectors.
    proprio: (N, T+1, P) proprio vectors.
    actions: (N, T, A) raw executed actions.
    task: registered task name.
    policy: behaviour policy name.
    seed: master seed of the rollouts.
    generation: JSON-able fields that determine the data (compared by
      `matches_generation` to decide whether an existing dataset can be reused).
    config: optional config snapshot (ConfigDict or mapping) stored for provenance.
    overwrite: replace an existing dataset at `path`; otherwise an existing path raises.

  Returns:
    The meta dictionary written to meta.json.

  Raises:
    ValueError: inconsistent shapes or non-finite values.
    FileExistsError: `path` exists and `overwrite` is False.
  """
  states = np.ascontiguousarray(states, np.float32)
  proprio = np.ascontiguousarray(proprio, np.float32)
  actions = np.ascontiguousarray(actions, np.float32)
  if actions.ndim != 3 or states.ndim != 3 or proprio.ndim != 3:
    raise ValueError('Expected states (N, T+1, S), proprio (N, T+1, P), actions (N, T, A); '
                     f'got {states.shape}, {proprio.shape}, {actions.shape}.')
  n, t, a = actions.shape
  if states.shape[:2] != (n, t + 1) or proprio.shape[:2] != (n, t + 1):
    raise ValueError(f'With actions {actions.shape} (N, T, A), states and proprio must be '
                     f'({n}, {t + 1}, .); got {states.shape} and {proprio.shape}.')
  if n < 1 or t < 1:
    raise ValueError(f'A dataset needs at least one trajectory of one step; got N={n}, T={t}.')
  for key, x in zip(ARRAY_KEYS, (states, proprio, actions)):
    if not np.all(np.isfinite(x)):
      raise ValueError(f'{key} contains non-finite values.')

  path = os.path.abspath(path)
  parent, name = os.path.split(path)
  if is_temporary(path):
    raise ValueError(f'{path} has the form of a temporary directory name; choose another.')
  os.makedirs(parent, exist_ok=True)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f'{path} already exists; pass overwrite=True to replace it.')
  clean_stale_temporaries(path)

  tmp = os.path.join(parent, f'.{name}.tmp-{os.getpid()}-{uuid.uuid4().hex}')
  os.mkdir(tmp)
  try:
    arrays_path = os.path.join(tmp, ARRAYS_FILE)
    with open(arrays_path, 'wb') as f:
      np.savez(f, states=states, proprio=proprio, actions=actions)
      f.flush()
      os.fsync(f.fileno())
    meta = {
        'format': FORMAT_NAME,
        'format_version': FORMAT_VERSION,
        'task': task,
        'num_trajectories': int(n),
        'trajectory_length': int(t),
        'state_size': int(states.shape[2]),
        'proprio_size': int(proprio.shape[2]),
        'action_size': int(a),
        'policy': policy,
        'seed': int(seed),
        'generation': _to_jsonable(dict(generation or {})),
        'config': _to_jsonable(config) if config is not None else None,
        'stats': compute_stats(states, proprio, actions),
        'arrays_sha256': io.sha256_file(arrays_path),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'wmjax_version': _wmjax_version(),
    }
    meta[META_SHA_KEY] = meta_digest(json.loads(json.dumps(meta)))
    # meta.json last: a directory without it is never mistaken for a dataset.
    with open(os.path.join(tmp, META_FILE), 'w') as f:
      json.dump(meta, f, indent=2, sort_keys=True)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
    _fsync_dir(tmp)
    if os.path.exists(path):
      # Retire the old dataset under a temporary name, then swap the new one in.
      old = os.path.join(parent, f'.{name}.old-{os.getpid()}-{uuid.uuid4().hex}')
      os.rename(path, old)
      os.rename(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, path)
    _fsync_dir(parent)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def _check_meta(meta: Any, path: str) -> dict[str, Any]:
  if not isinstance(meta, dict):
    raise ValueError(f'{path}/{META_FILE} is not a JSON object.')
  if meta.get('format') != FORMAT_NAME:
    raise ValueError(f'{path} is not a wmjax dataset: format is {meta.get("format")!r}, '
                     f'expected {FORMAT_NAME!r}.')
  if meta.get('format_version') != FORMAT_VERSION:
    raise ValueError(f'{path}: dataset format version {meta.get("format_version")!r} is not '
                     f'supported; this wmjax reads version {FORMAT_VERSION}. Regenerate it with '
                     'experiments/generate_data.py.')
  required = ('task', 'num_trajectories', 'trajectory_length', 'state_size', 'proprio_size',
              'action_size', 'stats', 'arrays_sha256')
  missing = [k for k in required if k not in meta]
  if missing:
    raise ValueError(f'{path}/{META_FILE} lacks the fields {missing}.')
  if META_SHA_KEY in meta and meta_digest(meta) != meta[META_SHA_KEY]:
    raise ValueError(f'{path}/{META_FILE} was edited or damaged after it was written (its '
                     f'sha256 differs from {META_SHA_KEY}); regenerate the dataset with '
                     'experiments/generate_data.py --overwrite.')
  _check_stats(meta['stats'], path)
  return meta


def _check_stats(stats: Any, path: str) -> None:
  """Raises ValueError on missing, non-finite or non-positive-std normalisation statistics."""
  if not isinstance(stats, dict):
    raise ValueError(f'{path}/{META_FILE}: stats is not an object.')
  for name in ('action', 'proprio', 'state'):
    for kind in ('mean', 'std'):
      key = f'{name}_{kind}'
      try:
        x = np.asarray(stats[key], np.float64)
      except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f'{path}/{META_FILE}: stats.{key} is missing or not numbers.') from e
      if not np.all(np.isfinite(x)) or (kind == 'std' and not np.all(x > 0)):
        raise ValueError(f'{path}/{META_FILE}: stats.{key} = {x.tolist()} must be finite'
                         + (' and > 0.' if kind == 'std' else '.'))


def read_meta(path: str, task: str | None = None) -> dict[str, Any]:
  """Reads and checks meta.json only (cheap: no arrays are read).

  Raises:
    FileNotFoundError: no directory or no meta.json at `path`.
    ValueError: a temporary directory, unparsable JSON, wrong format/version or task.
  """
  path = os.path.abspath(path)
  if is_temporary(path):
    raise ValueError(f'{path} is an unfinished temporary directory of a dataset writer, '
                     'not a dataset.')
  if not os.path.isdir(path):
    raise io.MissingInputError(f'No dataset directory at {path}; create one with '
                               'experiments/generate_data.py.')
  meta_path = os.path.join(path, META_FILE)
  if not os.path.isfile(meta_path):
    raise io.MissingInputError(f'{path} is not a complete dataset: {META_FILE} is missing.')
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{meta_path} is corrupt (not valid JSON): {e}') from e
  meta = _check_meta(meta, path)
  if task is not None and meta['task'] != task:
    raise ValueError(f'{path} holds data of task {meta["task"]!r}, expected task {task!r}.')
  return meta


def check_compatible(meta: Mapping[str, Any], task: str | None = None, *,
                     state_size: int | None = None, proprio_size: int | None = None,
                     action_size: int | None = None, num_hist: int | None = None,
                     frameskip: int | None = None, image_size: int | None = None) -> None:
  """Checks that a dataset fits what a caller (model, env, loader) expects.

  Args:
    meta: a dataset's meta dictionary.
    task: expected task name.
    state_size, proprio_size, action_size: expected S, P and raw A.
    num_hist, frameskip: window shape; trajectories must hold num_hist * frameskip steps.
    image_size: requested image side. Any positive size is servable because images are
      rendered from states; only its validity is checked.

  Raises:
    ValueError naming the first mismatch.
  """
  name = meta.get('task', '?')
  if task is not None and meta['task'] != task:
    raise ValueError(f'Dataset is of task {meta["task"]!r}, expected task {task!r}.')
  for key, want in (('state_size', state_size), ('proprio_size', proprio_size),
                    ('action_size', action_size)):
    if want is not None and meta[key] != want:
      raise ValueError(f'Dataset ({name}) has {key} {meta[key]}, expected {want}.')
  if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
    raise ValueError(f'image_size must be a positive int, got {image_size!r}.')
  if num_hist is not None or frameskip is not None:
    span = (num_hist or 1) * (frameskip or 1)
    if meta['trajectory_length'] < span:
      raise ValueError(
          f'Dataset ({name}) trajectories have {meta["trajectory_length"]} steps, fewer than '
          f'one window of num_hist * frameskip = {span} steps.')


def load_dataset(path: str, task: str | None = None,
                 expected: Mapping[str, Any] | None = None, verify: bool = True) -> Dataset:
  """Reads and validates a dataset.

  Args:
    path: dataset directory.
    task: if given, the dataset must be of this task.
    expected: optional keyword arguments of `check_compatible` (e.g. {'action_size': 2,
      'num_hist': 3, 'frameskip': 5}).
    verify: check arrays.npz against the sha256 recorded in meta.json.

  Returns:
    The Dataset (numpy arrays in host memory).

  Raises:
    FileNotFoundError: missing directory or files.
    ValueError: a corrupt or truncated file, wrong format or version, another task,
      shapes inconsistent with meta.json, or a mismatch with `expected`.
  """
  path = os.path.abspath(path)
  meta = read_meta(path, task=task)
  arrays_path = os.path.join(path, ARRAYS_FILE)
  if not os.path.isfile(arrays_path):
    raise io.MissingInputError(f'{path} is not a complete dataset: {ARRAYS_FILE} is missing.')
  if verify:
    digest = io.sha256_file(arrays_path)
    if digest != meta['arrays_sha256']:
      raise ValueError(f'{arrays_path} is corrupt or truncated: sha256 {digest[:12]}... does '
                       f'not match {meta["arrays_sha256"][:12]}... recorded in {META_FILE}.')
  try:
    with np.load(arrays_path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in ARRAY_KEYS if k in z.files}
  except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as e:
    raise ValueError(f'{arrays_path} is corrupt or truncated: {e}') from e
  missing = [k for k in ARRAY_KEYS if k not in arrays]
  if missing:
    raise ValueError(f'{arrays_path} lacks the arrays {missing}.')

  n, t = meta['num_trajectories'], meta['trajectory_length']
  want = {'states': (n, t + 1, meta['state_size']),
          'proprio': (n, t + 1, meta['proprio_size']),
          'actions': (n, t, meta['action_size'])}
  for k in ARRAY_KEYS:
    if arrays[k].shape != want[k]:
      raise ValueError(f'{path}: {k} has shape {arrays[k].shape}, but {META_FILE} says '
                       f'{want[k]}.')
    if arrays[k].dtype != np.float32:
      raise ValueError(f'{path}: {k} has dtype {arrays[k].dtype}, expected float32.')
    bad = ~np.isfinite(arrays[k])
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f'{arrays_path}: {k} holds {int(bad.sum())} non-finite values (first at '
                       f'trajectory {first[0]}, step {first[1]}, channel {first[2]}); a dataset '
                       'must be finite. Regenerate it with experiments/generate_data.py '
                       '--overwrite.')
  if META_SHA_KEY not in meta:  # Written before meta.json had a checksum: check its stats.
    stats = compute_stats(arrays['states'], arrays['proprio'], arrays['actions'])
    for key, value in stats.items():
      if not np.allclose(meta['stats'][key], value, rtol=1e-4, atol=1e-6):
        raise ValueError(f'{path}/{META_FILE}: stats.{key} does not match the arrays (edited '
                         'or damaged meta.json); regenerate the dataset with '
                         'experiments/generate_data.py --overwrite.')
  if expected:
    check_compatible(meta, **dict(expected))
  return Dataset(arrays['states'], arrays['proprio'], arrays['actions'], meta)


def matches_generation(path: str, generation: Mapping[str, Any],
                       task: str | None = None) -> bool:
  """True if a valid dataset exists at `path` and was generated with `generation`.

  Reads the arrays to verify them (cheap at these sizes); any invalid dataset gives False.
  """
  try:
    ds = load_dataset(path, task=task)
  except (FileNotFoundError, ValueError):
    return False
  return ds.meta.get('generation') == _to_jsonable(dict(generation))
