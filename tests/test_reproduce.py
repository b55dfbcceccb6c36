"""The reproduction pipeline: a `test`-scale smoke run, resumption, and bad configs."""

import json
import os

import pytest

from experiments.configs import reproduce as reproduce_config
from wmjax import io
from wmjax.experiment import reproduce
from wmjax.experiment import reproduce_report


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
    assert e['host_seconds'] > 0
  assert list(task['gap']['models']) == ['base', 'adversarial']
  md = open(os.path.join(workdir, 'results.md')).read()
  assert '| AWM | mpc |' in md and 'paper GD / Adam / CEM' in md and '| host s |' in md
  # base/cem_mpc ran on the first 2 problems: its cell says so and the detail table compares
  # Adam on exactly those.
  cem = next(e for e in task['evaluations'] if e['name'] == 'base/cem_mpc')
  assert cem['num_instances'] == 2 and len(cem['instance_success']) == 2
  assert '(n=2)' in md and '| base/cem_mpc |' in md
  # The tables say what their columns mean and what compares.
  assert 'What compares:' in md and 'not an upper bound' in md
  assert 'Adam / CEM MPC on the same problems |' in md  # Some rows ran on fewer problems.
  assert os.path.exists(os.path.join(workdir, 'wall', 'success_vs_time.png'))
  on_disk = json.load(open(os.path.join(workdir, 'results.json')))
  assert on_disk['tasks'][0]['evaluations'] == json.loads(json.dumps(task['evaluations']))

  # A second invocation finds every stage's output and redoes nothing.
  lines.clear()
  again = reproduce.reproduce(rc, workdir, say=lines.append)
  skipped = [ln for ln in lines if ln.endswith('done already, skipped')]
  assert len(skipped) == len(lines) - 1  # All but the data stage (which checks itself).
  assert again['tasks'][0]['evaluations'] == task['evaluations']
  # A rerun that skips every stage leaves the recorded stage times as they were.
  assert again['tasks'][0]['stage_seconds'] == task['stage_seconds']
  assert set(task['stage_seconds']) >= {'data', 'train base model'}
  assert io.is_done(workdir) and io.is_done(os.path.join(workdir, 'wall', 'world_model'))

  # A results.json truncated after its stage finished: that stage, and only it, runs again.
  victim = os.path.join(workdir, 'wall', 'plan', 'base', 'cem_mpc', 'results.json')
  with open(victim, 'r+') as f:
    f.truncate(50)
  lines.clear()
  third = reproduce.reproduce(rc, workdir, say=lines.append)
  redone = [ln for ln in lines if 'not done after all' in ln]
  assert len(redone) == 1 and 'plan base/cem_mpc' in redone[0]
  assert f'{victim} was changed or corrupted' in redone[0]
  skipped = [ln for ln in lines if ln.endswith('done already, skipped')]
  assert len(skipped) == len(lines) - 3  # Data, and the redone stage's two lines.
  same = lambda ev: [(e['name'], e['instance_success']) for e in ev]
  assert same(third['tasks'][0]['evaluations']) == same(task['evaluations'])
  assert json.load(open(victim))['num_instances'] == 2


def test_tables_drop_the_same_problems_column_when_every_row_ran_on_all():
  e = dict(name='base/adam_mpc', model='base', planner='adam', mode='mpc', kind='grid',
           factor=1.0, bounded=False, simulator=False, success_rate=0.1, ci95=(0.03, 0.3),
           num_instances=20, budget={'num_replans': 30, 'execute': 1, 'model_actions': 30},
           settings='adam lr 0.2 x 20', seconds_per_episode=30.0, seconds_per_instance=1.5,
           compile_seconds=9.0, instance_success=[False] * 20)
  task = {'task': 'wall', 'variant': 'cpu', 'coverage': {}, 'evaluations': [e],
          'model_error_ratio_vs_no_change': {}, 'gap': None, 'stage_seconds': {'data': 3.0},
          'seeds': {'plan.seed': 0}}
  md = reproduce_report.markdown({'scale': 'quick', 'seconds': 60.0, 'machine': {}, 'tasks': [task]})
  assert 'on the same problems' not in md and 'What compares:' in md
  assert 'quick scale' in md and 'not an upper bound' not in md  # No simulator row.
  assert '| base | mpc | 10 [3-30] | 80 / 82 |' not in md  # Published: GD / Adam / CEM.
  assert '| base | mpc | 10 [3-30] | 12 / 80 / 82 |' in md


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


GPU_ROWS = ['base/adam_open_loop', 'base/adam_mpc', 'adversarial/adam_open_loop',
            'adversarial/adam_mpc', 'online/adam_mpc', 'base/cem_open_loop', 'base/cem_mpc',
            'adversarial/cem_mpc', 'online/cem_mpc', 'base/gd_open_loop']


def test_gpu_scale_runs_the_grid_at_the_papers_budgets():
  from wmjax.experiment import finetune as finetune_lib  # pylint: disable=g-import-not-at-top
  from wmjax.experiment import protocol  # pylint: disable=g-import-not-at-top
  from wmjax.experiment import train as train_lib  # pylint: disable=g-import-not-at-top
  rc = reproduce_config.get_config('gpu')
  reproduce.check_config(rc)
  assert rc.task_variant == 'gpu' and set(rc.tasks) == {'wall', 'pointmaze', 'pusht'}
  assert tuple(rc.models) == ('base', 'adversarial', 'online')
  for task in rc.tasks:
    c = reproduce.task_config(rc, task)
    train_lib.check_config(c)
    for method in finetune_lib.METHODS:
      c.finetune.method = method
      finetune_lib.check_config(c)
    assert c.model.encoder == 'conv' and c.train.encoder_pretrain_steps > 0
    rows = reproduce.rows(rc, task)
    assert [r['name'] for r in rows] == GPU_ROWS
    for row in rows:
      assert row['instances'] is None  # Every row on all 50 problems.
      p = reproduce.row_config(c, row).plan
      proto = protocol.protocol(reproduce.row_config(c, row))
      assert p.num_instances == 50 and p.num_videos == 0
      assert (p.adam.num_steps, p.adam.open_loop_num_steps, p.gd.num_steps) == (100, 300, 1000)
      assert (p.cem.num_samples, p.cem.num_elites) == (300, 30)
      assert p.cem.num_iterations == (30 if task == 'pusht' else 10)
      assert proto.model_actions == (5 if row['mode'] == 'open_loop' else p.budget)
  # The gpu variant leaves the test, cpu and paper configs as they were.
  from experiments.configs import wall  # pylint: disable=g-import-not-at-top
  assert wall.get_config('cpu').model.conv.channels == (16, 32, 64, 64)
  gpu, cpu = wall.get_config('gpu').model, wall.get_config('cpu').model
  assert gpu.conv.channels == (32, 64, 128, 128)
  assert gpu.predictor.to_dict() == cpu.predictor.to_dict()


@pytest.mark.slow
def test_gpu_scale_runs_end_to_end_at_test_sizes(tmp_path):
  """The gpu scale's stages and rows, with the task `test` configs (minutes on 2 CPU cores)."""
  rc = reproduce_config.get_config('gpu')
  rc.task_variant = 'test'
  rc.tasks = ('wall',)
  rc.overrides = reproduce_config.get_config('test').overrides
  results = reproduce.reproduce(rc, str(tmp_path / 'gpu'), say=lambda *a: None)
  (task,) = results['tasks']
  assert [e['name'] for e in task['evaluations']] == GPU_ROWS
  assert list(task['gap']['models']) == ['base', 'adversarial', 'online']
  for e in task['evaluations']:
    assert 0.0 <= e['success_rate'] <= 1.0 and e['budget']['model_actions'] == 5
