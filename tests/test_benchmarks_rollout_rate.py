"""The rollout-rate benchmark: `--quick` runs end to end and prints its table, per dtype."""

import os
import subprocess
import sys

from limits import TIMEOUT_S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_prints_rates_beside_the_matmul():
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'rollout_rate.py'), '--quick',
       '--dtypes', 'float32,bfloat16'],
      capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert 'jax_default_matmul_precision' in out and 'backend: cpu' in out
  rows = {l.split('|')[1].strip(): l.split('|')[2:-1] for l in out.splitlines()
          if l.startswith('| ') and not l.startswith('| program')}
  assert set(rows) == {'matmul 128 x 128 float32', 'history rollout', 'markov rollout',
                       'history rollout, bfloat16', 'markov rollout, bfloat16'}, out
  for name, cells in rows.items():
    gflop, seconds, rate = (float(c) for c in cells[:3])
    assert gflop > 0 and seconds > 0 and rate > 0, name
  # The history rollout (num_hist 3) does more work per step than the one-frame rollout.
  assert float(rows['history rollout'][0]) > float(rows['markov rollout'][0])
  # Another computation dtype does the same work.
  for mode in ('history', 'markov'):
    assert float(rows[f'{mode} rollout, bfloat16'][0]) > 0.5 * float(rows[f'{mode} rollout'][0])
