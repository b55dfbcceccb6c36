"""Continuous per-task features of the simulator state: regression targets for state readouts.

A state vector can hold angles wrapped to an interval (PushT's block angle lives in [-pi, pi)), so
regressing it directly asks a linear readout for a jump of 2 pi between two nearly identical
frames. `readout_targets` replaces every angle by its cosine and sine, which are continuous in the
frame and linear in nothing else; other components pass through unchanged. Uses: the auxiliary
state head of the conv encoder's pretraining (wmjax/models/conv.py) and the linear probe of a
frozen encoder (wmjax/training/probe.py).

    targets = readout_targets('pusht', states)   # (M, 7) -> (M, 8)
    names = readout_names('pusht')               # ('agent_x', ..., 'block_angle_cos', ...)
    weights = readout_weights('pusht', 'block_angle=8')  # (8,): 8 on cos and sin, 1 elsewhere

The table below is static, one entry per registered task (wmjax.envs.ALL_ENVS).
"""

from typing import NamedTuple

import numpy as np


class StateFeatures(NamedTuple):
  """What one task's state vector holds.

  Attributes:
    names: one name per state component, in state order (S,).
    angles: indices of components that are wrapped angles (radians).
  """

  names: tuple[str, ...]
  angles: tuple[int, ...] = ()


# State layouts of the tasks (see each task's module docstring in wmjax/envs/).
STATE_FEATURES = {
    # (agent x, agent y, block x, block y, block angle in [-pi, pi), agent vx, agent vy).
    'pusht': StateFeatures(('agent_x', 'agent_y', 'block_x', 'block_y', 'block_angle',
                            'agent_vx', 'agent_vy'), angles=(4,)),
    'pointmaze': StateFeatures(('x', 'y', 'vx', 'vy')),
    'wall': StateFeatures(('x', 'y')),
}


def state_features(task: str) -> StateFeatures:
  """The task's StateFeatures; ValueError naming the choices for an unknown task."""
  if task not in STATE_FEATURES:
    raise ValueError(f'No state features for task {task!r}; choose one of '
                     f'{tuple(STATE_FEATURES)}.')
  return STATE_FEATURES[task]


def readout_names(task: str) -> tuple[str, ...]:
  """Names of the columns of `readout_targets(task, ...)`: an angle `a` becomes `a_cos`, `a_sin`
  in its place (PushT: agent_x, agent_y, block_x, block_y, block_angle_cos, block_angle_sin,
  agent_vx, agent_vy)."""
  f = state_features(task)
  out = []
  for i, name in enumerate(f.names):
    out += [f'{name}_cos', f'{name}_sin'] if i in f.angles else [name]
  return tuple(out)


def readout_targets(task: str, states: np.ndarray) -> np.ndarray:
  """States (..., S) raw -> readout targets (..., S + number of angles), float32, on the host.

  Every angle component is replaced in place by (cos, sin); the others are copied. The result is
  continuous across an angle's wrap.
  """
  f = state_features(task)
  states = np.asarray(states)
  if states.ndim < 1 or states.shape[-1] != len(f.names):
    raise ValueError(f'{task} states must be (..., {len(f.names)}); got {states.shape}.')
  columns = []
  for i in range(len(f.names)):
    x = states[..., i:i + 1].astype(np.float64)
    columns += [np.cos(x), np.sin(x)] if i in f.angles else [x]
  return np.concatenate(columns, axis=-1).astype(np.float32)


def readout_weights(task: str, spec: str) -> np.ndarray:
  """Per-column weights of `readout_targets(task, ...)` from a spec 'name=w[,name=w...]'.

  Names are the task's state feature names (`state_features(task).names`); an angle's weight
  applies to both its cos and sin columns. Unnamed features weigh 1; '' is all ones.

  Raises:
    ValueError: an unknown or repeated name, a malformed entry, or a weight that is not a finite
      number >= 0; the message names the choices.
  """
  f = state_features(task)
  weights = dict.fromkeys(f.names, 1.0)
  seen = set()
  for entry in filter(None, (e.strip() for e in spec.split(','))):
    name, sep, value = (part.strip() for part in entry.partition('='))
    if not sep or name not in weights:
      raise ValueError(f'Feature weight {entry!r} for {task}: write name=weight with name one of '
                       f'{f.names}.')
    if name in seen:
      raise ValueError(f'Feature {name!r} is weighted twice in {spec!r}.')
    try:
      w = float(value)
    except ValueError:
      w = float('nan')
    if not np.isfinite(w) or w < 0:
      raise ValueError(f'Weight of feature {name!r} must be a finite number >= 0; got {value!r}.')
    weights[name] = w
    seen.add(name)
  out = []
  for i, name in enumerate(f.names):
    out += [weights[name]] * (2 if i in f.angles else 1)
  return np.asarray(out, np.float32)
