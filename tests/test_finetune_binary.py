"""The finetuning binary (AWM, OWM) and the gap diagnostic on Wall's `test` config."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments.configs import wall
from limits import TIMEOUT_S
from wmjax import io
from wmjax import training
from wmjax.experiment import evaluation as evaluation_lib
from wmjax.experiment import finetune
from wmjax.experiment import gap
from wmjax.experiment import generate
from wmjax.experiment import layout
from wmjax.experiment import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, 'experiments', 'finetune.py')
# Long enough that a kill after the first checkpoint lands mid-run.
RESUME = dict(steps=160, checkpoint_every=20, eval_every=20, log_every=20)


def make_config(method='adversarial', **finetune_fields):
  c = wall.get_config('test')
  c.finetune.method = method
  c.finetune.update(finetune_fields)
  return c


@pytest.fixture(scope='module')
def base_dir(tmp_path_factory):
  """A workdir with the test dataset and a trained base world model."""
  workdir = str(tmp_path_factory.mktemp('wall_base'))
  c = wall.get_config('test')
  generate.generate(c, workdir, progress=False, preview=False)
  train_lib.train_and_evaluate(c, workdir, progress=False)
  return workdir


def fresh_workdir(tmp_path, base_dir, name):
  workdir = str(tmp_path / name)
  shutil.copytree(base_dir, workdir)
  return workdir


@pytest.mark.parametrize('method', finetune.METHODS)
def test_finetune_writes_a_loadable_model(tmp_path, base_dir, method):
  workdir = fresh_workdir(tmp_path, base_dir, method)
  summary = finetune.finetune(make_config(method), workdir, progress=False)
  out = os.path.join(workdir, 'finetune_' + method)
  assert summary['steps'] == 12 and summary['pretrained']['step'] is not None
  evaluation = json.load(open(os.path.join(out, layout.EVAL_FILE)))
  assert evaluation['method'] == method and evaluation['step'] == 12
  records = training.read_metrics(out)
  train = [r for r in records if r['split'] == 'train']
  assert [r['step'] for r in train] == [4, 8, 12]
  assert [r['step'] for r in records if r['split'] == 'val'] == [0, 6, 12]  # 0: the base model.
  if method == 'adversarial':
    assert all(r['adv/eps_visual'] > 0 for r in train)
  else:
    assert all(r['owm/buffer_size'] > 0 for r in train)
  # The finetuned model loads like any world model and differs from the base one.
  _, params, meta = training.load_world_model(out, which='latest')
  _, base_params, _ = training.load_world_model(workdir)
  assert meta['finetune_method'] == method and meta['step'] == 12
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       params['predictor'], base_params['predictor'])
  assert max(jax.tree.leaves(diffs)) > 0
  jax.tree.map(np.testing.assert_array_equal, params['encoder'], base_params['encoder'])


def launch(workdir, method):
  cmd = [sys.executable, BINARY, '--config', os.path.join(ROOT, 'experiments/configs/wall.py:test'),
         '--workdir', workdir, f'--config.finetune.method={method}'] + [
             f'--config.finetune.{k}={v}' for k, v in RESUME.items()]
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             WMJAX_JAX_CACHE=os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache')))
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=ROOT)


def latest_state(directory):
  ck = training.Checkpointer(directory)
  try:
    state, meta = ck.restore_raw('latest')
  finally:
    ck.close()
  return jax.device_get(state), meta


def test_online_finetune_resumes_after_kill(tmp_path, base_dir):
  ref_dir = fresh_workdir(tmp_path, base_dir, 'ref')
  finetune.finetune(make_config('online', **RESUME), ref_dir, progress=False)
  ref_state, _ = latest_state(os.path.join(ref_dir, 'finetune_online'))

  run_dir = fresh_workdir(tmp_path, base_dir, 'run')
  ckpts = os.path.join(run_dir, 'finetune_online', 'checkpoints')
  proc = launch(run_dir, 'online')
  deadline = time.time() + TIMEOUT_S
  while not os.path.isdir(os.path.join(ckpts, '20')) and proc.poll() is None and (
      time.time() < deadline):
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  done = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert done and done[-1] < RESUME['steps']

  proc = launch(run_dir, 'online')
  stdout, _ = proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode == 0, stdout[-3000:]
  assert f'Resuming online finetuning from step {done[-1]}' in stdout
  state, meta = latest_state(os.path.join(run_dir, 'finetune_online'))
  assert meta['step'] == RESUME['steps']
  # Parameters and the replay buffer (train-state `extra`) match the uninterrupted run.
  jax.tree.map(np.testing.assert_array_equal, state['params'], ref_state['params'])
  jax.tree.map(np.testing.assert_array_equal, state['extra'], ref_state['extra'])


def test_pretrained_checkpoint_must_match(tmp_path, base_dir):
  workdir = fresh_workdir(tmp_path, base_dir, 'mismatch')
  c = make_config()
  c.model.predictor.mlp_dim = 64
  with pytest.raises(ValueError, match=r'(?s)pretrained checkpoint does not match.*mlp_dim'):
    finetune.finetune(c, workdir, progress=False)
  with pytest.raises(FileNotFoundError, match='train_world_model.py'):
    finetune.finetune(make_config(pretrained=str(tmp_path / 'nothing')), workdir, progress=False)


@pytest.mark.parametrize('field,value,match', [
    ('method', 'dagger', "finetune.method='dagger'"),
    ('adversarial.lambda_visual', -0.1, 'lambda_visual'),
    ('online.goal_horizon', 4, 'longer than the planner'),
    ('online.online_fraction', 1.0, 'online_fraction must be a finite number > 0 and < 1'),
    ('predictor_lr', float('nan'), 'finetune.predictor_lr must be a finite number >= 0; got nan'),
    ('online.lr', float('inf'), 'finetune.online.lr must be a finite number'),
    ('pretrained_checkpoint', 'newest', "choose one of \\('latest', 'best'\\)"),
    ('online.planner', 'ilqr', "finetune.online.planner='ilqr'; choose one of"),
])
def test_bad_finetune_config_fails_at_startup(field, value, match):
  c = make_config('online' if field.startswith('online') else 'adversarial')
  *parents, leaf = field.split('.')
  node = c.finetune
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    finetune.check_config(c)


def test_finetune_configs_of_every_variant_are_valid():
  from experiments.configs import pointmaze, pusht  # pylint: disable=g-import-not-at-top
  for module in (wall, pusht, pointmaze):
    for variant in ('test', 'cpu', 'gpu', 'paper'):
      for method in finetune.METHODS:
        c = module.get_config(variant)
        c.finetune.method = method
        if variant == 'paper':
          c.model.dinov2.weights = __file__  # Any existing file passes the config check.
        finetune.check_config(c)


def test_diagnostic_compares_every_model(tmp_path, base_dir):
  workdir = fresh_workdir(tmp_path, base_dir, 'diagnose')
  for method in finetune.METHODS:
    finetune.finetune(make_config(method, steps=4), workdir, progress=False)
  r = gap.diagnose(wall.get_config('test'), workdir, progress=False)
  assert list(r['models']) == ['base', 'adversarial', 'online']
  for entry in r['models'].values():
    for what in ('offline', 'own_plans', 'own_plans_executed', 'base_plans'):
      for mode in evaluation_lib.ROLLOUT_MODES:
        losses = entry[what][mode]['model']['loss']
        assert np.all(np.isfinite(losses)) and len(losses) >= 1
    assert 0.0 <= entry['own_plans_out_of_range'] <= 1.0
  # The base model's own plans are the base plans.
  base = r['models']['base']
  assert base['own_plans'] == base['base_plans']
  # Wall executes plans unclipped, as its reference does: the executed actions are the planned.
  assert not r['clip_actions'] and base['own_plans_executed'] == base['own_plans']
  md = open(os.path.join(workdir, 'diagnose', 'gap.md')).read()
  assert '| adversarial |' in md and '| online |' in md


def test_damaged_pretrained_checkpoint_is_refused(tmp_path, base_dir):
  workdir = fresh_workdir(tmp_path, base_dir, 'damaged_base')
  best = os.path.join(workdir, 'world_model', 'best')
  (step,) = os.listdir(best)
  shutil.rmtree(os.path.join(best, step, 'meta'))
  with pytest.raises(training.CorruptCheckpointError,
                     match=f'(?s)pretrained checkpoint is damaged.*best/{step}/meta'):
    finetune.finetune(make_config(), workdir, progress=False)
  assert not os.listdir(os.path.join(workdir, 'finetune_adversarial', 'checkpoints'))


def test_online_finetune_with_cem_plans(tmp_path, base_dir):
  """OWM's buffer from another planner's plans (not the paper's): CEM with plan.cem's settings,
  which then belong to the run's settings."""
  workdir = fresh_workdir(tmp_path, base_dir, 'owm_cem')
  c = make_config('online', steps=4, log_every=4, eval_every=4, checkpoint_every=4)
  c.finetune.online.planner = 'cem'
  finetune.finetune(c, workdir, progress=False)
  records = training.read_metrics(os.path.join(workdir, 'finetune_online'))
  assert [r['owm/buffer_size'] > 0 for r in records if r['split'] == 'train'] == [True]
  c.finetune.steps = 8
  c.plan.cem.num_samples = 32
  with pytest.raises(ValueError, match=r'(?s)finetune.steps.*plan.cem.num_samples: checkpoint '
                     r'has 16, this run 32'):
    finetune.finetune(c, workdir, progress=False)
  assert finetune.finetune_settings(make_config('online')) == finetune.FINETUNE_SETTINGS


def test_finetune_resume_compares_settings_and_marks_done(tmp_path, base_dir):
  workdir = fresh_workdir(tmp_path, base_dir, 'settings')
  finetune.finetune(make_config(steps=4), workdir, progress=False)
  out = os.path.join(workdir, 'finetune_adversarial')
  assert io.is_done(out)
  with pytest.raises(ValueError, match=r'(?s)finetune.adversarial.lambda_visual: checkpoint has '
                     r'0.05, this run 0.1.*finetune.steps'):
    c = make_config(steps=6)
    c.finetune.adversarial.lambda_visual = 0.1
    finetune.finetune(c, workdir, progress=False)
  assert io.is_done(out)  # A refused resume changes nothing.
