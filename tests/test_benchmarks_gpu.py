"""The single-GPU benchmark: `--sizes tiny` runs end to end on a CPU and writes every row as JSON."""

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import gpu as bench
from limits import TIMEOUT_S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache'))


def _finite_positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_run_writes_every_row_with_finite_times(tmp_path):
  out = tmp_path / 'gpu.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'gpu.py'), '--sizes=tiny',
       '--repeats=2', f'--json_out={out}', f'--compilation_cache_dir={CACHE}'],
      capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'jax_default_matmul_precision' in proc.stdout and 'backend cpu' in proc.stdout
  assert '| row | settings | instances | compile s | median s |' in proc.stdout
  result = json.loads(out.read_text())
  assert result['machine']['backend'] == 'cpu'
  model = result['model']
  assert (model['tokens'], model['token_dim'], model['block_width']) == (16, 32, 32)
  assert model['attention_resolved'] == 'default (xla)'  # auto in float32 on a CPU.
  assert model['attention_method'] == 'mask'
  assert model['peak_tflops'] is None  # Unknown card: no fraction of peak.
  rows = {(r['name'], r['instances']): r for r in result['rows']}
  assert sorted(rows) == [('adam', 1), ('adam', 3), ('cem', 1), ('forward', 16), ('train', 4)]
  for r in rows.values():
    assert 'error' not in r, r
    assert _finite_positive(r['compile_s']) and _finite_positive(r['median_s']), r
    assert len(r['times_s']) == 2 and all(_finite_positive(t) for t in r['times_s']), r
    assert _finite_positive(r['flops']) and _finite_positive(r['tflops']), r
    assert r['fraction_of_peak'] is None and r['target_s'] is None, r
  # Loop-free rows: the counted unit is the program itself, so both counts agree.
  for key in (('forward', 16), ('train', 4)):
    r = rows[key]
    assert r['flops'] == pytest.approx(r['xla_program_flops'], rel=0.1), r
  # Scanned planners: XLA counts a loop body once. CEM (test sizes: 2 iterations, horizon 5,
  # history rollout with 3 growing steps and 2 sliding ones in a scan) runs ~2.5x the program
  # XLA counts; Adam (4 steps of a 5-step one-frame scan) far more.
  assert rows[('cem', 1)]['flops'] > 2 * rows[('cem', 1)]['xla_program_flops']
  assert rows[('adam', 1)]['flops'] > 5 * rows[('adam', 1)]['xla_program_flops']
  assert rows[('adam', 3)]['flops'] == pytest.approx(3 * rows[('adam', 1)]['flops'], rel=0.05)


def test_bfloat16_cudnn_padded_run_falls_back_on_cpu():
  with pytest.warns(RuntimeWarning, match="falling back to 'xla'"):
    bench.predictor_lib._WARNED.clear()  # pylint: disable=protected-access
    result = bench.run(sizes='tiny', dtype='bfloat16', attention='cudnn', pad_width_to=48,
                       rows=('forward',), repeats=1, attention_method='prefix')
  model = result['model']
  assert model['attention_resolved'] == 'xla' and model['block_width'] == 48
  assert model['attention_method'] == 'prefix'  # What cuDNN runs, here through XLA.
  assert model['matmul_precision'] == 'bfloat16'
  (r,) = result['rows']
  assert 'error' not in r, r
  assert r['name'] == 'forward' and _finite_positive(r['median_s']) and _finite_positive(r['flops'])


def test_flops_only_counts_without_running():
  result = bench.run(sizes='tiny', rows=('cem',), flops_only=True)
  (r,) = result['rows']
  assert _finite_positive(r['flops']) and 'median_s' not in r


def test_peaks_precision_and_cost_analysis_forms():
  assert bench.card_name('NVIDIA H100 80GB HBM3') == 'H100 SXM'
  assert bench.card_name('NVIDIA H200') == 'H200'
  assert bench.card_name('NVIDIA A100-SXM4-80GB') == 'A100'
  assert bench.card_name('cpu') is None and bench.peak_tflops('cpu', 'bfloat16') is None
  assert bench.peak_tflops('NVIDIA H200', 'bfloat16') == pytest.approx(989.4)
  assert bench.peak_tflops('NVIDIA H100 80GB HBM3', 'tf32') == pytest.approx(494.7)
  assert bench.matmul_precision('bfloat16', None) == 'bfloat16'
  assert bench.matmul_precision('float32', None) == 'tf32'
  assert bench.matmul_precision('float32', 'highest') == 'float32'
  assert bench.matmul_precision('float32', None, backend='cpu') == 'float32'

  class Stage:
    def __init__(self, value):
      self.value = value

    def cost_analysis(self):
      if isinstance(self.value, Exception):
        raise self.value
      return self.value

  assert bench.xla_flops(Stage({'flops': 12.0})) == 12.0
  assert bench.xla_flops(Stage([{'flops': 7.0}])) == 7.0
  for missing in ({}, [], None, {'bytes accessed': 3.0}, {'flops': -1.0},
                  {'flops': float('nan')}, NotImplementedError('no cost model')):
    assert bench.xla_flops(Stage(missing)) is None


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='Unknown rows'):
    bench.run(sizes='tiny', rows=('decode',))
  with pytest.raises(ValueError, match='Unknown sizes'):
    bench.build('huge', 'float32', 'auto', 0)


def test_a_failing_row_is_recorded_and_the_others_run(monkeypatch):
  real = bench.time_row

  def flaky(row, repeats):
    if row['name'] == 'forward':
      raise RuntimeError('no such kernel')
    return real(row, repeats)

  monkeypatch.setattr(bench, 'time_row', flaky)
  result = bench.run(sizes='tiny', rows=('forward', 'train'), repeats=1)
  failed, ok = result['rows']
  assert failed['error'] == 'RuntimeError: no such kernel' and 'median_s' not in failed
  assert 'error' not in ok and _finite_positive(ok['median_s'])
