"""Keeps `import mujoco.mjx` quiet about the optional Warp backend when Warp is not installed.

`mujoco.mjx` tries to import NVIDIA Warp (its optional `impl='warp'` backend) and prints
"Failed to import warp: ..." and "Failed to import mujoco_warp: ..." to stdout on every run where
it is absent. wmjax never asks for that backend, so `wmjax.envs` installs (once, at its import)
a finder that silences exactly those two lines when `mujoco.mjx.warp` is first imported, and
only when Warp is not installed at all: a Warp that is installed but fails to load still says
why. Nothing is imported here; the finder does nothing for any other module.
"""

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import sys
from typing import Any

MODULE = 'mujoco.mjx.warp'
_DROPPED = ('Failed to import warp:', 'Failed to import mujoco_warp:')


class _QuietLoader(importlib.abc.Loader):
  """Runs the wrapped loader with the Warp lines filtered out of stdout."""

  def __init__(self, loader: Any):
    self._loader = loader

  def __getattr__(self, name: str) -> Any:  # get_source, get_data, ... as the real loader.
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module) -> None:
    captured = io.StringIO()
    try:
      with contextlib.redirect_stdout(captured):
        self._loader.exec_module(module)
    finally:
      kept = [line for line in captured.getvalue().splitlines(keepends=True)
              if not line.startswith(_DROPPED)]
      sys.stdout.write(''.join(kept))


class _QuietWarpFinder(importlib.abc.MetaPathFinder):
  """Finds `mujoco.mjx.warp` as usual and wraps its loader; removes itself once used."""

  def find_spec(self, fullname, path, target=None):
    if fullname != MODULE:
      return None
    uninstall()
    if importlib.util.find_spec('warp') is not None:  # Installed: let it speak.
      return None
    spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def install() -> None:
  """Adds the finder unless `mujoco.mjx.warp` was imported already (idempotent)."""
  if MODULE in sys.modules or any(isinstance(f, _QuietWarpFinder) for f in sys.meta_path):
    return
  sys.meta_path.insert(0, _QuietWarpFinder())


def uninstall() -> None:
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietWarpFinder)]
