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
  assert names == [r['name'] for r in reproduce.rows(rc, 'wall')]
  assert {'base/adam_open_loop', 'adversarial/adam_mpc', 'base/cem_mpc', 'simulator/cem_mpc',
          'base/adam_mpc_bounded', 'base/adam_mpc_x0.5'} <= set(names)
  for e in task['evaluations']:
    assert 0.0 <= e['success_rate'] <= 1.0 and e['seconds_per_episode'] > 0
    assert e['budget']['model_actions'] == 5  # Equal executed steps for every planner.
  assert list(task['gap']['models']) == ['base', 'adversarial']
  md = open(os.path.join(workdir, 'results.md')).read()
  assert '| AWM | mpc |' in md and 'paper GD / Adam / CEM' in md
  # base/cem_mpc ran on the first 2 problems: its cell says so and the detail table compares
  # Adam on exactly those.
  cem = next(e for e in task['evaluations'] if e['name'] == 'base/cem_mpc')
  assert cem['num_instances'] == 2 and len(cem['instance_success']) == 2
  assert '(n=2)' in md and '| base/cem_mpc |' in md
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
  rows = {r['name']: r for r in reproduce.rows(rc, 'wall')}
  adam = reproduce.row_config(c, rows['base/adam_mpc_x2'])
  assert adam.plan.adam.num_steps == 2 * c.plan.adam.num_steps
  assert adam.plan.num_instances == c.plan.num_instances
  cem = reproduce.row_config(c, rows['base/cem_mpc_x0.25'])
  assert (cem.plan.cem.num_samples, cem.plan.cem.num_elites, cem.plan.cem.num_iterations) == (
      round(c.plan.cem.num_samples / 4), round(c.plan.cem.num_elites / 4),
      c.plan.cem.num_iterations)
  assert adam.plan.checkpoint == 'best'
  assert reproduce.row_config(c, rows['adversarial/cem_mpc']).plan.checkpoint == 'latest'
  ceiling = reproduce.row_config(c, rows['simulator/cem_mpc'])
  assert ceiling.plan.model == 'simulator' and ceiling.plan.simulator_cost == 'latent'
  assert ceiling.plan.num_instances == 20
  gd = reproduce.row_config(c, rows['base/gd_mpc'])
  assert gd.plan.num_instances == 10 and gd.plan.num_videos <= 10
  assert reproduce.row_config(c, rows['online/gd_open_loop']).plan.num_instances == (
      c.plan.num_instances)
  assert 'online/gd_mpc' not in rows  # Skipped by pattern.
  # The first matching pattern wins: the PushT ceiling and every PushT CEM row use 10 problems.
  pusht = {r['name']: r for r in reproduce.rows(rc, 'pusht')}
  assert pusht['simulator/cem_mpc']['instances'] == 10
  assert pusht['base/cem_mpc_x0.25']['instances'] == 10
  assert pusht['base/adam_mpc']['instances'] is None and 'base/mppi_mpc' not in pusht
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
    ('bounded_models', ('online',), "bounded_models has 'online'"),
    ('sweep', {'adam': (0.5, 0.0)}, r"sweep\['adam'\] factors must be > 0"),
    ('instances', (('*/*/cem_mpc', 0),), r"each entry must be \(pattern, n >= 1\)"),
    ('instances', (('wall/base/cem_closed', 3),), "pattern 'wall/base/cem_closed' matches no row"),
    ('skip', ('*/base/gd_mpc',), r"skip: pattern '\*/base/gd_mpc' matches no row"),
])
def test_bad_reproduce_config(field, value, match):
  rc = reproduce_config.get_config('test')  # Models: base and adversarial; planner adam.
  rc[field] = value
  with pytest.raises(ValueError, match=match):
    reproduce.check_config(rc)


def test_skip_and_too_many_problems():
  rc = reproduce_config.get_config('test')
  rc.skip = ('wall/base/adam_mpc_bounded',)
  reproduce.check_config(rc)
  assert 'base/adam_mpc_bounded' not in [r['name'] for r in reproduce.rows(rc, 'wall')]
  rc.instances = (('*/*/cem_mpc', 99),)
  row = next(r for r in reproduce.rows(rc, 'wall') if r['name'] == 'base/cem_mpc')
  with pytest.raises(ValueError, match='99 problems is more than'):
    reproduce.row_config(reproduce.task_config(rc, 'wall'), row)
  with pytest.raises(ValueError, match='Unknown reproduce scale'):
    reproduce_config.get_config('huge')
