"""The planning benchmark: `--quick` runs end to end and prints a pasteable table and ratios."""

import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import planning as bench
from wmjax import envs
from limits import TIMEOUT_S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scaled_budgets_keep_the_paper_ratios():
  full = {n: bench.scaled_settings(n, 1.0, 30) for n in ('gd', 'adam', 'cem', 'mppi')}
  assert (full['gd']['num_steps'], full['adam']['num_steps']) == (1000, 100)
  assert (full['cem']['num_samples'], full['cem']['num_elites'],
          full['cem']['num_iterations']) == (300, 30, 30)
  assert (full['mppi']['num_samples'], full['mppi']['num_elites']) == (512, 64)
  tenth = {n: bench.scaled_settings(n, 0.1, 10) for n in ('gd', 'adam', 'cem')}
  assert (tenth['gd']['num_steps'], tenth['adam']['num_steps']) == (100, 10)
  assert (tenth['cem']['num_samples'], tenth['cem']['num_elites'],
          tenth['cem']['num_iterations']) == (30, 3, 10)


def test_quick_run_prints_table_and_ratios():
  cache = os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache'))
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'planning.py'), '--quick',
       f'--compilation_cache_dir={cache}'],
      capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert 'jax_default_matmul_precision' in out and 'backend cpu' in out
  assert 'world model: random test-config wall model' in out
  assert '| planner | through | budget per plan | instances | s / plan |' in out
  rows = [l for l in out.splitlines() if l.startswith('| adam ') or l.startswith('| cem ')]
  assert len(rows) == 2, out
  assert '| 5 x 1 |' in rows[0] and '| 1 x 5 |' in rows[1]  # Replans x executed per episode.
  assert 'adam/cem, 2 instances: per plan' in out and 'per episode' in out


def test_simulator_rows_plan_through_the_true_dynamics_with_the_latent_cost():
  env = envs.load('wall')
  model, params, _ = bench.load_model('wall', 'test', None, env)
  settings = bench.scaled_settings('cem', 0.02, 2)
  row = bench.bench_planner('cem', settings, 'wall', env, model, params, bench.nominal_stats(env),
                            batch=2, budget=0, repeats=1, through='simulator')
  assert row['model'] == 'simulator' and 'episode_s' not in row
  assert np.isfinite(row['plan_s']) and row['plan_s'] > 0
  with pytest.raises(ValueError, match='choose one of'):
    bench.problem_fn('wall', env, model, None, 'cem', None, 'simulated', 5)


def test_ratios_compare_planners_and_what_they_plan_through():
  rows = [dict(planner=p, model=m, batch=50, plan_s=t, episode_s=2 * t)
          for p, m, t in (('adam', 'world_model', 1.0), ('cem', 'world_model', 4.0),
                          ('cem', 'simulator', 12.0))]
  assert bench.ratios(rows) == [
      'adam/cem, 50 instances: per plan 0.25, per episode 0.25 '
      '(paper: Adam episode <= 0.1 x CEM: does not hold here)',
      'cem simulator/world_model, 50 instances: per plan 3, per episode 3']
