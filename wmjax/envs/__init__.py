"""Planar tasks (paper section 5) behind one contract, and a static registry.

    env = wmjax.envs.load('wall')
    env = PixelObservation(FrameSkip(env, n=5), size=64)   # model actions, pixels

Task modules are imported by `load`, so importing this package builds nothing (no
MJX model, no `mujoco` import).
"""

import importlib

from wmjax.envs.base import Env
from wmjax.envs.base import State
from wmjax.envs.wrappers import FrameSkip
from wmjax.envs.wrappers import PixelObservation
from wmjax.envs.wrappers import vmap_reset
from wmjax.envs.wrappers import vmap_step
from wmjax.envs.wrappers import Wrapper

# Task name -> 'module:class', resolved by `load`.
_REGISTRY = {
    'pusht': 'wmjax.envs.pusht:PushT',
    'pointmaze': 'wmjax.envs.pointmaze:PointMaze',
    'wall': 'wmjax.envs.wall:Wall',
}
ALL_ENVS = tuple(_REGISTRY)


def load(name: str, **kwargs) -> Env:
  """Builds the task `name` (one of `ALL_ENVS`) with constructor `kwargs`.

  Raises:
    ValueError: `name` is not registered.
  """
  if name not in _REGISTRY:
    raise ValueError(f'Unknown env {name!r}; choose one of {ALL_ENVS}.')
  module, cls = _REGISTRY[name].split(':')
  return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = [
    'ALL_ENVS',
    'Env',
    'FrameSkip',
    'PixelObservation',
    'State',
    'Wrapper',
    'load',
    'vmap_reset',
    'vmap_step',
]
