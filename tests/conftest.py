"""Test-process setup: CPU only, a cheaper XLA backend, persistent compilation cache.

Compilation dominates the suite's time, so every test process -- and every subprocess, notebook
kernel and binary a test starts, which inherit the environment set here -- shares one persistent
XLA cache. It lives in the user's cache folder (~/.cache/wmjax/jax_tests, or $WMJAX_TEST_CACHE),
not in the checkout, so that a fresh clone (as CI makes) reuses what earlier runs on the machine
compiled. The tests' programs are tiny, so XLA's CPU backend skips LLVM's optimisations for them
(`TEST_XLA_FLAGS`): same results, far less compile time (RESULTS.md, "Test suite time").
"""

import os

from limits import TEST_XLA_FLAGS

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {TEST_XLA_FLAGS}'.strip()

import jax  # pylint: disable=g-import-not-at-top

_CACHE = os.environ.setdefault('WMJAX_TEST_CACHE', os.path.join(
    os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
    'wmjax', 'jax_tests'))
_CACHE_MAX_BYTES = 2 << 30  # Past this, the oldest entries are dropped at the start of a run.
jax.config.update('jax_compilation_cache_dir', _CACHE)
# Caches most of the tests' programs on an idle machine too (0.5 s would miss many of them).
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)


def _prune_cache(path: str, max_bytes: int) -> None:
  """Deletes the least recently modified cache files until the folder holds <= max_bytes / 2."""
  try:
    entries = [e for e in os.scandir(path) if e.is_file()]
  except FileNotFoundError:
    return
  sizes = {e.path: e.stat() for e in entries}
  total = sum(s.st_size for s in sizes.values())
  if total <= max_bytes:
    return
  for name, st in sorted(sizes.items(), key=lambda kv: kv[1].st_mtime):
    if total <= max_bytes // 2:
      break
    try:
      os.remove(name)
      total -= st.st_size
    except OSError:
      pass


def pytest_configure(config):
  if not hasattr(config, 'workerinput'):  # Once per run, before xdist workers start.
    _prune_cache(_CACHE, _CACHE_MAX_BYTES)
