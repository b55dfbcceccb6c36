"""The notebooks run end to end at tiny sizes (WMJAX_NOTEBOOK_TINY=1), and are committed clean."""

import os
import time

import nbformat
import pytest

from limits import TIMEOUT_S

nbclient = pytest.importorskip('nbclient')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, 'notebooks')
NOTEBOOKS = ('quickstart.ipynb', 'bring_your_own_model.ipynb', 'train_test_gap.ipynb')
# Tiny mode takes well under a minute on two idle cores; the limit only stops a hung kernel.
CELL_TIMEOUT_S = TIMEOUT_S


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_valid_and_has_no_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code), (
      f'{name}: strip the outputs before committing.')
  # First code cell installs wmjax only where it is missing; a later one has the tiny switch.
  assert "find_spec('wmjax') is None" in code[0].source and '%pip install' in code[0].source
  # It keeps the runtime's jax and jaxlib (Colab's GPU build), then shows the devices jax uses.
  assert '-c keep_jax.txt' in code[0].source and 'jax.devices()' in code[0].source
  assert 'git+https://github.com/wmjax' not in code[0].source  # No placeholder URL to edit.
  assert any('WMJAX_NOTEBOOK_TINY' in c.source for c in code[1:3])
  assert not any('experiments' in line for c in code for line in c.source.splitlines()
                 if line.lstrip().startswith(('import', 'from'))), f'{name} imports experiments/.'


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_tiny(name, tmp_path, monkeypatch):
  # The kernel inherits this environment: tiny sizes, CPU, and the tests' compilation cache.
  cache = os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache'))
  monkeypatch.setenv('WMJAX_NOTEBOOK_TINY', '1')
  monkeypatch.setenv('JAX_PLATFORMS', os.environ.get('JAX_PLATFORMS', 'cpu'))
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', cache)
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')
  monkeypatch.setenv('MPLBACKEND', 'agg')
  nb = _read(name)
  client = nbclient.NotebookClient(
      nb, timeout=CELL_TIMEOUT_S, kernel_name='python3',
      resources={'metadata': {'path': str(tmp_path)}})  # Files the notebook writes go here.
  t0 = time.perf_counter()
  client.execute()  # Raises CellExecutionError (with the traceback) on any failing cell.
  elapsed = time.perf_counter() - t0
  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if o.output_type == 'error']
  assert not errors, errors
  print(f'{name}: {elapsed:.1f} s')
