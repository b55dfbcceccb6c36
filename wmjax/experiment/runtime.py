"""What every experiment binary does first, in its `main` (never at import)."""

import os
from typing import Any, Sequence

from absl import app
from absl import logging
import jax

from wmjax import distributed

# The persistent compilation cache: a second run of a binary skips most compiles.
CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'wmjax', 'jax')


def start(argv: Sequence[str], distributed_flags: Any = None, *, cache: bool = True,
          cache_dir: str | None = None) -> None:
  """Rejects stray arguments, joins a multi-process job when its flags are given (before any JAX
  backend starts), quiets orbax's per-save INFO logs and, if `cache`, enables the persistent
  compilation cache (`cache_dir`, else `$WMJAX_JAX_CACHE`, else ~/.cache/wmjax/jax)."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if distributed_flags is not None:
    distributed.initialize_from_flags(distributed_flags)
  logging.set_verbosity(logging.WARNING)
  if cache:
    jax.config.update('jax_compilation_cache_dir',
                      cache_dir or os.environ.get('WMJAX_JAX_CACHE', CACHE_DIR))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
