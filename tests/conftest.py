"""Test-process setup: CPU only, persistent compilation cache, fixed seeds."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top

_CACHE = os.environ.get(
    'WMJAX_TEST_CACHE', os.path.join(os.path.dirname(os.path.dirname(__file__)), '.jax_cache'))
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
