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
  rows = {r['name']: r for r in reproduce.rows(rc)}
  adam = reproduce.row_config(c, rows['base/adam_mpc_x2'])
  assert adam.plan.adam.num_steps == 2 * c.plan.adam.num_steps
  assert adam.plan.num_instances == c.plan.num_instances  # Sweep rows keep every problem.
  cem = reproduce.row_config(c, rows['base/cem_mpc_x0.25'])
  assert (cem.plan.cem.num_samples, cem.plan.cem.num_elites, cem.plan.cem.num_iterations) == (
      round(c.plan.cem.num_samples / 4), round(c.plan.cem.num_elites / 4),
      c.plan.cem.num_iterations)
  assert adam.plan.checkpoint == 'best'
  assert reproduce.row_config(c, rows['adversarial/cem_mpc']).plan.checkpoint == 'latest'
  ceiling = reproduce.row_config(c, rows['simulator/cem_mpc'])
  assert ceiling.plan.model == 'simulator' and ceiling.plan.simulator_cost == 'latent'
  assert ceiling.plan.num_instances == rc.ceiling_instances > 0
  gd = reproduce.row_config(c, rows['base/gd_mpc'])
  assert gd.plan.num_instances == rc.instances['gd_mpc'] < c.plan.num_instances
  assert gd.plan.num_videos <= gd.plan.num_instances
  assert reproduce.row_config(c, rows['online/gd_open_loop']).plan.num_instances == (
      c.plan.num_instances)
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
    ('ceiling_instances', -1, 'ceiling_instances must be >= 0'),
])
def test_bad_reproduce_config(field, value, match):
  rc = reproduce_config.get_config('test')  # Models: base and adversarial.
  rc[field] = value
  with pytest.raises(ValueError, match=match):
    reproduce.check_config(rc)


def test_bad_sweep_and_instances():
  rc = reproduce_config.get_config('test')
  rc.sweep = {'adam': (0.5, 0.0)}
  with pytest.raises(ValueError, match=r"sweep\['adam'\] factors must be > 0"):
    reproduce.check_config(rc)
  rc = reproduce_config.get_config('test')
  rc.instances = {'cem_closed': 3}
  with pytest.raises(ValueError, match="instances: key 'cem_closed' must be <planner>_<mode>"):
    reproduce.check_config(rc)
  rc = reproduce_config.get_config('test')
  rc.skip = ('base/gd_mpc',)
  with pytest.raises(ValueError, match=r"skip names rows the config does not have: \['base/gd_mpc'\]"):
    reproduce.check_config(rc)
  rc.skip = ('base/adam_mpc_bounded',)
  assert 'base/adam_mpc_bounded' not in [r['name'] for r in reproduce.rows(rc)]
  rc = reproduce_config.get_config('test')
  rc.instances = {'cem_mpc': 99}
  row = next(r for r in reproduce.rows(rc) if r['name'] == 'base/cem_mpc')
  with pytest.raises(ValueError, match='99 problems is more than'):
    reproduce.row_config(reproduce.task_config(rc, 'wall'), row)
  with pytest.raises(ValueError, match='Unknown reproduce scale'):
    reproduce_config.get_config('huge')
