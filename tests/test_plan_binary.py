"""The planning binary: end to end on Wall's `test` config (tiny data, tiny model), bad input."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import pointmaze
from experiments.configs import pusht
from experiments.configs import wall
from limits import TIMEOUT_S
from wmjax import checks
from wmjax import envs
from wmjax import io
from wmjax import training
from wmjax.envs import execution
from wmjax.experiment import generate
from wmjax.experiment import layout
from wmjax.experiment import plan
from wmjax.experiment import plan_report
from wmjax.experiment import planners
from wmjax.experiment import protocol
from wmjax.experiment import train as train_lib
from wmjax.planning import objectives
from wmjax.planning import problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, 'experiments', 'plan.py')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A Wall workdir with a test dataset and a world model trained for a few steps."""
  wd = str(tmp_path_factory.mktemp('wall_plan'))
  generate.generate(wall.get_config('test'), wd, progress=False, preview=False)
  c = wall.get_config('test')
  c.train.update(steps=5, checkpoint_every=5, eval_every=5, log_every=5)
  train_lib.train_and_evaluate(c, wd, progress=False)
  return wd


def make_config(**plan_fields):
  c = wall.get_config('test')
  c.plan.update(plan_fields)
  return c


def check_results(r, planner, mode, num_replans, execute):
  c = wall.get_config('test')
  n = c.plan.num_instances
  assert r['protocol']['planner'] == planner and r['protocol']['mode'] == mode
  assert r['budget']['num_replans'] == num_replans and r['budget']['execute'] == execute
  assert r['budget']['env_steps'] == num_replans * execute * c.frameskip
  assert r['num_instances'] == n and len(r['instances']) == n
  for inst in r['instances']:
    assert set(inst) >= {'success', 'final_distance', 'min_distance', 'replans_to_success',
                         'init_state', 'goal_state', 'final_state'}
    assert inst['min_distance'] <= inst['final_distance'] + 1e-5
    final_distance = envs.load('wall').distance(
        jnp.asarray(inst['final_state']), jnp.asarray(inst['goal_state']))
    np.testing.assert_allclose(float(final_distance), inst['final_distance'], rtol=1e-5,
                               atol=1e-5)
    if inst['success']:
      assert 1 <= inst['replans_to_success'] <= num_replans
  k = sum(i['success'] for i in r['instances'])
  assert r['num_success'] == k and r['success_rate'] == k / n
  lo, hi = r['success_rate_ci95']
  assert 0.0 <= lo <= k / n <= hi <= 1.0
  t = r['timing']
  assert t['compile_seconds'] > 0 and t['run_seconds'] > 0
  assert t['seconds_per_plan'] == pytest.approx(t['run_seconds'] / num_replans)
  assert min(t['load_seconds'], t['problems_seconds'], t['outputs_seconds']) >= 0
  assert r['machine']['jax'] == jax.__version__
  assert 'jax_default_matmul_precision' in r['machine']
  assert r['planner_settings'] == c.plan[planner].to_dict()
  out = r['out_dir']
  assert json.load(open(os.path.join(out, 'results.json')))['num_success'] == k
  summary = open(os.path.join(out, 'summary.md')).read()
  assert 'Wilson' in summary and f'{num_replans} replans x {execute} executed' in summary
  assert 'Host work around the compiled call' in summary
  assert os.path.getsize(os.path.join(out, 'distance.png')) > 0
  assert len(r['videos']['paths']) == c.plan.num_videos
  for p in r['videos']['paths']:
    assert os.path.getsize(os.path.join(out, p)) > 0
  assert 'simulator' in r['videos']['left']  # The test model has no decoder.
  realized = [i['first_plan_realized_cost'] for i in r['instances']]
  assert np.shape([i['first_plan'] for i in r['instances']]) == (
      n, c.plan.horizon, c.frameskip * envs.load('wall').action_size)
  if r['protocol']['model'] == 'world_model':
    assert np.all(np.isfinite(realized)) and 'First plans, from the true start' in summary
  else:  # A plan through the simulator is scored as it is realized.
    assert realized == [None] * n and 'First plans' not in summary


@pytest.mark.parametrize('planner,mode,fields,num_replans,execute', [
    ('adam', 'mpc', {}, 5, 1),
    ('adam', 'open_loop', {'bounded': True}, 1, 5),
    ('cem', 'open_loop', {'model': 'simulator', 'simulator_cost': 'state'}, 1, 5),
    ('cem', 'open_loop', {'model': 'simulator', 'simulator_cost': 'distance'}, 1, 5),
    ('adam', 'mpc', {'model': 'simulator'}, 5, 1),
])
def test_plan_in_process(workdir, planner, mode, fields, num_replans, execute):
  r = plan.evaluate(make_config(planner=planner, mode=mode, **fields), workdir, progress=False)
  check_results(r, planner, mode, num_replans, execute)
  assert r['protocol']['bounded'] == fields.get('bounded', False)
  # Only the state- and distance-cost simulators run without the world model.
  assert (r['checkpoint'] is None) == (fields.get('simulator_cost') in ('state', 'distance'))
  assert r['protocol']['simulator_cost'] == (
      fields.get('simulator_cost', 'latent') if fields.get('model') == 'simulator' else None)
  assert os.path.basename(r['out_dir']) == protocol.run_name(make_config(
      planner=planner, mode=mode, **fields))


def test_realized_first_plan_cost_scores_the_executed_plan(workdir):
  """Open loop, the first plan is the whole executed plan: its realized cost ('last') is the
  latent cost of the final executed state, encoded from its rendered frame."""
  c = make_config(planner='cem', mode='open_loop', num_videos=0, run_name='realized')
  r = plan.evaluate(c, workdir, progress=False)
  env = envs.load('wall')
  model, params, meta = layout.load_model(c, workdir, None, env)
  stats, _ = layout.load_stats(c, workdir, env, meta)
  normalizer = execution.normalizer_from_stats(stats)
  latent = problems.rendered_latent_fn(env, model, params)
  z = lambda s: latent(jnp.asarray(s), normalizer.normalize_proprio(
      env.proprio(env.reset_to(jnp.asarray(s)))))
  for inst in r['instances']:
    final, goal = z(inst['final_state']), z(inst['goal_state'])
    want = objectives.trajectory_cost(jax.tree.map(lambda x: x[None], final), goal, mode='last',
                                      alpha=c.plan.alpha)
    assert inst['first_plan_realized_cost'] == pytest.approx(float(want), rel=1e-4, abs=1e-6)
  # The model predicted the cost of the same plans: a different number from a learned model.
  assert [i['first_plan_realized_cost'] for i in r['instances']] != [
      i['first_plan_cost'] for i in r['instances']]


def test_a_subset_of_problems_is_those_problems(workdir):
  """`plan.problem_indices` evaluates exactly the named problems of the full sampling (their
  starts, goals and episode keys), recorded under their own indices."""
  c = make_config(planner='cem', mode='open_loop', model='simulator', simulator_cost='distance',
                  problem_indices='5,1-2', num_instances=3, num_videos=0, run_name='subset')
  r = plan.evaluate(c, workdir, progress=False)
  assert r['problem_indices'] == [5, 1, 2] == [i['index'] for i in r['instances']]
  init, goal, keys = plan.sample_problems(envs.load('wall'), 6, 0)
  sub = plan.sample_problems(envs.load('wall'), 3, 0, (5, 1, 2))
  np.testing.assert_array_equal(sub[0], init[np.array([5, 1, 2])])
  np.testing.assert_array_equal(sub[1], goal[np.array([5, 1, 2])])
  np.testing.assert_array_equal(jax.random.key_data(sub[2]),
                                jax.random.key_data(keys)[np.array([5, 1, 2])])
  for inst, i in zip(r['instances'], (5, 1, 2)):
    np.testing.assert_allclose(inst['init_state'], init[i], rtol=1e-6)
  assert protocol.problem_indices(make_config().plan) == tuple(range(4))


def test_rows_that_differ_only_in_parameters_share_one_program(workdir, monkeypatch):
  """A second evaluation with the same program key reuses the compiled program; the parameters
  stay an argument (other weights give that program's results for them, as a fresh compile
  does), and any changed setting compiles its own."""
  finals = lambda r: [i['final_state'] for i in r['instances']]
  plan._PROGRAMS.clear()
  first = plan.evaluate(make_config(run_name='p1'), workdir, progress=False)
  again = plan.evaluate(make_config(run_name='p2'), workdir, progress=False)
  assert not first['timing']['program_reused'] and again['timing']['program_reused']
  assert finals(again) == finals(first)
  changed = make_config(run_name='p3')
  changed.plan.adam.lr *= 2
  assert not plan.evaluate(changed, workdir, progress=False)['timing']['program_reused']

  load = layout.load_model
  def scaled_model(*args, **kwargs):  # Other weights, the same architecture.
    model, params, meta = load(*args, **kwargs)
    return model, jax.tree.map(lambda x: x * 0.5, params), meta
  monkeypatch.setattr(layout, 'load_model', scaled_model)
  reused = plan.evaluate(make_config(run_name='p4'), workdir, progress=False)
  plan._PROGRAMS.clear()
  fresh = plan.evaluate(make_config(run_name='p5'), workdir, progress=False)
  assert reused['timing']['program_reused'] and not fresh['timing']['program_reused']
  assert finals(reused) == finals(fresh) and finals(reused) != finals(first)
  realized = lambda r: [i['first_plan_realized_cost'] for i in r['instances']]
  assert realized(reused) == realized(fresh) != realized(first)  # Its encoder's weights too.
  assert sum(k[0] == 'realized' for k in plan._PROGRAMS) == 1  # One realized-cost function.


def test_plan_binary_cem_mpc(workdir):
  cmd = [sys.executable, BINARY, '--config', os.path.join(ROOT, 'experiments/configs/wall.py:test'),
         '--workdir', workdir, '--checkpoint', os.path.join(workdir, 'world_model'),
         '--config.plan.planner=cem', '--config.plan.run_name=cli']
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             WMJAX_JAX_CACHE=os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache')))
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'budget 1 replans x 5 executed = 5 model actions (25 env steps)' in proc.stdout
  r = json.load(open(os.path.join(workdir, 'plan', 'cli', 'results.json')))
  r['out_dir'] = os.path.join(workdir, 'plan', 'cli')
  check_results(r, 'cem', 'mpc', 1, 5)


@pytest.mark.parametrize('fields,match', [
    ({'planner': 'ilqr'}, r"Unknown planner plan.planner='ilqr'; choose one of \('gd'"),
    ({'planner': 'cem', 'horizon': 3}, r'plan.cem.execute=5 must be in \[1, plan.horizon=3\]'),
    ({'planner': 'adam', 'horizon': 0}, 'plan.horizon must be >= 1'),
    ({'planner': 'cem', 'budget': 7}, 'plan.budget=7 executed model actions must be a positive '
     'multiple of plan.cem.execute=5'),
    ({'objective': 'first'}, "objective 'first'"),
    ({'rollout': 'teacher'}, "rollout 'teacher'"),
    ({'model': 'oracle', 'mode': 'closed'}, r"plan.model='oracle'.*\n.*plan.mode='closed'"),
    ({'num_videos': 9}, r'plan.num_videos must be in \[0, plan.num_instances=4\]'),
    ({'problem_indices': '0-2'}, r"names 3 problems but plan.num_instances=4: set num_instances "
     r"to 3"),
    ({'problem_indices': '0,x'}, r"plan.problem_indices='0,x': give comma-separated"),
    ({'problem_indices': '3-1', 'num_instances': 3}, r"the range '3-1' runs backwards"),
    ({'problem_indices': '1,0-1', 'num_instances': 3}, 'an index repeats'),
    ({'model': 'simulator', 'simulator_cost': 'pixels'}, r"plan.simulator_cost='pixels'; choose "
     r"one of \('latent', 'state', 'distance'\)"),
])
def test_bad_config_fails_before_any_work(tmp_path, fields, match):
  with pytest.raises(ValueError, match=match):
    plan.evaluate(make_config(**fields), str(tmp_path), progress=False)


def test_missing_or_foreign_checkpoint(workdir, tmp_path):
  with pytest.raises(FileNotFoundError, match='train_world_model.py'):
    plan.evaluate(make_config(), str(tmp_path), progress=False)
  with pytest.raises(FileNotFoundError, match='simulator_cost=state'):
    plan.evaluate(make_config(model='simulator'), str(tmp_path), progress=False)
  c = pointmaze.get_config('test')
  with pytest.raises(ValueError, match="trained on task 'wall'; this config plans on 'pointmaze'"):
    plan.evaluate(c, workdir, progress=False)
  c = make_config()
  c.frameskip = 4
  with pytest.raises(ValueError, match='model actions of size 10; this config needs frameskip'):
    plan.evaluate(c, workdir, progress=False)


def test_instances_must_divide_across_devices(workdir, monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(ValueError, match='num_instances=4 does not divide across the 3 devices'):
    plan.evaluate(make_config(), workdir, progress=False)


def test_every_config_and_planner_is_valid():
  for module in (wall, pusht, pointmaze):
    for variant in ('test', 'cpu', 'gpu', 'paper'):
      c = module.get_config(variant)
      for name in planners.PLANNERS:
        c.plan.planner = name
        for mode in protocol.MODES:
          c.plan.mode = mode
          proto = protocol.protocol(c)
          assert proto.model_actions == (c.plan.budget if mode == 'mpc' else c.plan.horizon)
          planners.make_planner(name, c.plan[name], horizon=c.plan.horizon, action_size=10,
                                open_loop=mode == 'open_loop')
  paper = wall.get_config('paper').plan
  assert (paper.adam.lr, paper.adam.num_steps, paper.gd.num_steps) == (0.2, 100, 1000)
  assert (paper.cem.num_samples, paper.cem.num_elites, paper.cem.num_iterations) == (300, 30, 10)
  assert pusht.get_config('paper').plan.cem.num_iterations == 30
  assert pointmaze.get_config('cpu').plan.alpha == 0.0 and wall.get_config('cpu').plan.alpha == 1.0


def test_planner_factory_errors():
  with pytest.raises(ValueError, match=r"Unknown planner 'sgd'; choose one of"):
    planners.make_planner('sgd', {}, horizon=5, action_size=10)
  with pytest.raises(ValueError, match="plan.cem lacks the setting 'num_elites'"):
    planners.make_planner('cem', {'num_samples': 8, 'num_iterations': 1, 'init_std': 1.0},
                          horizon=5, action_size=10)


def test_problems_are_sampled_once_per_process():
  plan.task_problems.cache_clear()
  first = plan.task_problems('wall', False, 4, 3)
  again = plan.task_problems('wall', False, 4, 3)
  assert plan.task_problems.cache_info().hits == 1
  assert all(a is b for a, b in zip(first, again))
  fresh = plan.sample_problems(envs.load('wall', clip_actions=False), 4, 3)
  np.testing.assert_array_equal(np.asarray(first[0]), np.asarray(fresh[0]))
  np.testing.assert_array_equal(np.asarray(first[1]), np.asarray(fresh[1]))
  np.testing.assert_array_equal(jax.random.key_data(first[2]), jax.random.key_data(fresh[2]))
  other = plan.task_problems('wall', False, 4, 4)  # Another seed: other problems.
  assert not np.array_equal(np.asarray(other[0]), np.asarray(first[0]))


def test_wilson_interval():
  lo, hi = plan_report.wilson_interval(0, 4)
  assert lo == 0.0 and hi == pytest.approx(0.4899, abs=1e-4)
  lo, hi = plan_report.wilson_interval(25, 50)
  assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(0.2663, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints, non-finite values, atomic outputs.


def copy_workdir(workdir, tmp_path, name):
  out = str(tmp_path / name)
  shutil.copytree(workdir, out)
  return out


def flip_bytes(step_dir, count=8):
  """Inverts `count` bytes in the middle of the largest array file of a saved step's state."""
  files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(step_dir, 'state'))
           for f in names if os.sep + 'd' + os.sep in os.path.join(root, f) + os.sep]
  big = max(files, key=os.path.getsize)
  raw = bytearray(open(big, 'rb').read())
  for i in range(len(raw) // 2, len(raw) // 2 + count):
    raw[i] ^= 0xFF
  with open(big, 'wb') as f:
    f.write(raw)


def test_damaged_checkpoint_is_refused_naming_the_file(workdir, tmp_path):
  wd = copy_workdir(workdir, tmp_path, 'flipped')
  best = os.path.join(wd, 'world_model', 'best')
  (step,) = os.listdir(best)
  flip_bytes(os.path.join(best, step))
  with pytest.raises(training.CorruptCheckpointError,
                     match=f'(?s)best/{step}/state.*Refusing to plan.*plan.checkpoint=latest'):
    plan.evaluate(make_config(run_name='flipped'), wd, progress=False)
  assert not os.path.exists(os.path.join(wd, 'plan', 'flipped'))
  # A deleted meta item of the asked-for checkpoint: the same, naming the item.
  shutil.rmtree(os.path.join(wd, 'world_model', 'checkpoints', step, 'meta'))
  with pytest.raises(training.CorruptCheckpointError, match=f'checkpoints/{step}/meta cannot be '
                     'read'):
    plan.evaluate(make_config(checkpoint='latest'), wd, progress=False)


def test_missing_best_falls_back_to_latest_and_says_so(workdir, tmp_path, capsys):
  wd = copy_workdir(workdir, tmp_path, 'no_best')
  shutil.rmtree(os.path.join(wd, 'world_model', 'best'))
  r = plan.evaluate(make_config(planner='cem', mode='open_loop'), wd)
  assert r['checkpoint']['which'] == 'latest' and r['checkpoint']['requested'] == 'best'
  assert 'no best checkpoint' in r['checkpoint']['which_note']
  assert 'using the latest one' in capsys.readouterr().out


@pytest.mark.parametrize('field,value', [('adam.lr', float('nan')), ('adam.lr', 0.0),
                                         ('gd.noise_std', float('inf')), ('alpha', -1.0)])
def test_nonfinite_or_out_of_range_plan_settings_are_refused(tmp_path, field, value):
  c = make_config()
  section, leaf = field.split('.') if '.' in field else (None, field)
  (c.plan[section] if section else c.plan)[leaf] = value
  with pytest.raises(ValueError, match=f'plan.{field} must be a finite number'):
    plan.evaluate(c, str(tmp_path), progress=False)


def test_outputs_are_atomic_and_report_nonfinite_counts(workdir, capsys):
  r = plan.evaluate(make_config(run_name='counted'), workdir)
  out = r['out_dir']
  assert 'non-finite: 0 guarded, 0/20 plans' in capsys.readouterr().out
  on_disk = json.load(open(os.path.join(out, 'results.json')))
  assert on_disk['num_nonfinite'] == 0 and on_disk['num_nonfinite_plans'] == 0
  assert on_disk['num_plans'] == 4 * 5 and 'num_nonfinite' in on_disk['instances'][0]
  assert 'plans without a finite cost: 0/20' in open(os.path.join(out, 'summary.md')).read()
  assert io.is_done(out)
  assert not [f for f in os.listdir(out) if io.is_temporary(f)]
  with open(os.path.join(out, 'results.json'), 'r+') as f:  # Truncated afterwards.
    f.truncate(100)
  assert 'results.json was changed or corrupted' in io.done_problem(out)


def test_all_nonfinite_plans_fail_the_run(workdir, tmp_path, monkeypatch):
  wd = copy_workdir(workdir, tmp_path, 'nan_model')
  load = layout.load_model

  def nan_model(*args, **kwargs):  # A model whose every prediction is NaN.
    model, params, meta = load(*args, **kwargs)
    return model, jax.tree.map(lambda x: x * np.nan, params), meta

  monkeypatch.setattr(layout, 'load_model', nan_model)
  with pytest.raises(checks.NonFiniteError, match=r'Every one of the 20 plans had a non-finite '
                     'cost'):
    plan.evaluate(make_config(run_name='nan'), wd, progress=False)
  out = os.path.join(wd, 'plan', 'nan')
  r = json.load(open(os.path.join(out, 'results.json')))  # Kept for inspection ...
  assert r['num_nonfinite_plans'] == r['num_plans'] == 20 and r['num_nonfinite'] > 0
  assert not io.is_done(out)  # ... but the stage is not done.


def test_plan_holds_the_workdir_lock(workdir, tmp_path):
  wd = copy_workdir(workdir, tmp_path, 'locked')
  with open(os.path.join(wd, io.LOCK_FILE), 'w') as f:
    json.dump({'pid': os.getppid(), 'host': socket.gethostname(), 'start_time': None,
               'command': 'train_world_model', 'created': 'earlier'}, f)
  with pytest.raises(io.WorkdirLockedError, match='train_world_model'):
    plan.evaluate(make_config(), wd, progress=False)
