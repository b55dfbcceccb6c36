"""The reproduction pipeline: a `test`-scale smoke run, resumption, and bad configs."""

import json
import os

import pytest

from experiments import reproduce
from experiments.configs import reproduce as reproduce_config


def test_smoke_run_writes_tables_and_continues(tmp_path):
  rc = reproduce_config.get_config('test')
  workdir = str(tmp_path / 'repro')
  lines = []
  results = reproduce.reproduce(rc, workdir, say=lines.append)
  (task,) = results['tasks']
  names = [e['name'] for e in task['evaluations']]
  assert names == [r['name'] for r in reproduce.rows(rc)]
  assert {'base/adam_open_loop', 'adversarial/adam_mpc', 'base/cem_mpc', 'simulator/cem_mpc',
          'base/adam_mpc_bounded', 'base/adam_mpc_x0.5'} <= set(names)
  for e in task['evaluations']:
    assert 0.0 <= e['success_rate'] <= 1.0 and e['seconds_per_episode'] > 0
    assert e['budget']['model_actions'] == 5  # Equal executed steps for every planner.
  assert list(task['gap']['models']) == ['base', 'adversarial']
  md = open(os.path.join(workdir, 'results.md')).read()
  assert '| AWM | mpc |' in md and 'paper GD / Adam / CEM' in md
  assert os.path.exists(os.path.join(workdir, 'wall', 'success_vs_time.png'))
  on_disk = json.load(open(os.path.join(workdir, 'results.json')))
  assert on_disk['tasks'][0]['evaluations'] == json.loads(json.dumps(task['evaluations']))

  # A second invocation finds every stage's output and redoes nothing.
  lines.clear()
  again = reproduce.reproduce(rc, workdir, say=lines.append)
  skipped = [ln for ln in lines if ln.endswith('done already, skipped')]
  assert len(skipped) == len(lines) - 1  # All but the data stage (which checks itself).
  assert again['tasks'][0]['evaluations'] == task['evaluations']


def test_row_config_scales_budgets():
  rc = reproduce_config.get_config('cpu')
  c = reproduce.task_config(rc, 'wall')
  rows = {r['name']: r for r in reproduce.rows(rc)}
  adam = reproduce.row_config(c, rows['base/adam_mpc_x0.25'])
  assert adam.plan.adam.num_steps == round(c.plan.adam.num_steps * 0.25)
  cem = reproduce.row_config(c, rows['adversarial/cem_mpc_x2'])
  assert (cem.plan.cem.num_samples, cem.plan.cem.num_elites, cem.plan.cem.num_iterations) == (
      2 * c.plan.cem.num_samples, 2 * c.plan.cem.num_elites, c.plan.cem.num_iterations)
  assert cem.plan.checkpoint == 'latest' and adam.plan.checkpoint == 'best'
  ceiling = reproduce.row_config(c, rows['simulator/adam_mpc'])
  assert ceiling.plan.model == 'simulator'
  # Every scale's grid is valid for every task.
  for scale in reproduce_config.SCALES:
    rc = reproduce_config.get_config(scale)
    reproduce.check_config(rc)
    for task in rc.tasks:
      reproduce.task_config(rc, task)


@pytest.mark.parametrize('field,value,match', [
    ('tasks', ('wall', 'cartpole'), "unknown task 'cartpole'"),
    ('planners', ('adam', 'ilqr'), "unknown planner 'ilqr'"),
    ('models', ('base', 'dagger'), "unknown model 'dagger'"),
    ('sweep_models', ('online',), "sweep_models has 'online'"),
    ('sweep_factors', (0.0,), 'sweep_factors must be > 0'),
])
def test_bad_reproduce_config(field, value, match):
  rc = reproduce_config.get_config('test')  # Models: base and adversarial.
  rc[field] = value
  with pytest.raises(ValueError, match=match):
    reproduce.check_config(rc)
  with pytest.raises(ValueError, match='Unknown reproduce scale'):
    reproduce_config.get_config('huge')
