"""Planar tasks (paper section 5) behind one contract, and a static registry.

    env = wmjax.envs.load('wall')
    env = PixelObservation(FrameSkip(env, n=5), size=64)   # model actions, pixels

Task modules are imported by `load`, so importing this package builds nothing (no
MJX model, no `mujoco` import). `wmjax.envs.brax_compat` (the `brax` extra) turns our tasks
into Brax envs and Brax / MJX envs into tasks that `wmjax.planning.mpc` evaluates.
"""

import importlib

from wmjax.envs import quiet_import
from wmjax.envs.base import Env
from wmjax.envs.base import State
from wmjax.envs.wrappers import FrameSkip
from wmjax.envs.wrappers import PixelObservation
from wmjax.envs.wrappers import Wrapper

# `import mujoco.mjx` (by the MJX tasks, Brax) without the Warp lines (see quiet_import).
quiet_import.install()

# Task name -> 'module:class', resolved by `load`.
_REGISTRY = {
    'pusht': 'wmjax.envs.pusht:PushT',
    'pointmaze': 'wmjax.envs.pointmaze:PointMaze',
    'wall': 'wmjax.envs.wall:Wall',
}
ALL_ENVS = tuple(_REGISTRY)


def load(name: str, **kwargs) -> Env:
  """Builds the task `name` (one of `ALL_ENVS`) with constructor `kwargs`.

  Keyword arguments that are None are left out (the task's default, e.g.
  `clip_actions=None` executes actions as the task's reference does).

  Raises:
    ValueError: `name` is not registered.
  """
  if name not in _REGISTRY:
    raise ValueError(f'Unknown env {name!r}; choose one of {ALL_ENVS}.')
  module, cls = _REGISTRY[name].split(':')
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = [
    'ALL_ENVS',
    'Env',
    'FrameSkip',
    'PixelObservation',
    'State',
    'Wrapper',
    'load',
]
