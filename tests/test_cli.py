"""First contact with the binaries: one-line errors, help that lists config fields, console
scripts that run outside a checkout."""

import os
import shutil
import subprocess
import sys
import tomllib

import pytest
from limits import TIMEOUT_S

from wmjax.experiment import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {'wmjax-generate-data': 'generate_data', 'wmjax-train': 'train_world_model',
           'wmjax-finetune': 'finetune', 'wmjax-plan': 'plan',
           'wmjax-diagnose-gap': 'diagnose_gap', 'wmjax-reproduce': 'reproduce',
           'wmjax-compare': 'compare_runs'}


def _run(args, cwd=ROOT):
  return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT_S,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


@pytest.mark.parametrize('args,message', [
    (['--config', 'experiments/configs/wal.py:cpu'],
     "config file 'experiments/configs/wal.py' not found (did you mean wall.py?). Shipped "
     'configs: pointmaze, pusht, reproduce, wall'),
    (['--config=experiments/configs/wall.py:cpux'],
     "Unknown config variant 'cpux'; choose one of ('test', 'cpu', 'gpu', 'paper')"),
    (['--config', 'experiments/configs/wall.py:cpu', '--config.train.stepz=5'],
     "config.train has no field 'stepz'; did you mean --config.train.steps?"),
])
def test_mistakes_are_one_line(args, message):
  out = _run([sys.executable, 'experiments/train_world_model.py', *args, '--workdir', 'x'])
  assert out.returncode == 1
  assert out.stderr.count('\n') == 1 and message in out.stderr, out.stderr
  assert out.stderr.startswith('train_world_model.py: error: ')


@pytest.mark.parametrize('script,args,message', [
    ('reproduce.py', ['--config', 'experiments/configs/reproduce.py:test',
                      "--config.tasks=('walls',)"],
     "Invalid reproduce config:\n  tasks: unknown task 'walls'; choose from ('pusht', "
     "'pointmaze', 'wall')"),
    ('train_world_model.py', ['--config', 'experiments/configs/wall.py:test',
                              '--config.train.steps=-3'],
     'Invalid config:\n  train.steps must be >= 0; got -3'),
    ('train_world_model.py', ['--config', 'experiments/configs/wall.py:test'],
     'No dataset at {workdir}/dataset. Generate it first:\n  python experiments/generate_data.py '
     '--config experiments/configs/wall.py:test --workdir {workdir}'),
    ('plan.py', ['--config', 'experiments/configs/wall.py:test'],
     'No world model at {workdir}/world_model. Train one first:'),
])
def test_what_a_stage_refuses_is_reported_without_a_traceback(tmp_path, script, args, message):
  workdir = tmp_path / 'run'
  out = _run([sys.executable, f'experiments/{script}', *args, '--workdir', str(workdir)])
  assert out.returncode == 1, out.stderr
  assert out.stderr.startswith(f'{script}: error: '), out.stderr
  assert message.format(workdir=workdir) in out.stderr, out.stderr
  assert 'Traceback' not in out.stderr


def test_an_input_made_for_another_config_is_reported_without_a_traceback(tmp_path):
  workdir = str(tmp_path / 'run')
  config = ['--config', 'experiments/configs/wall.py:test', '--workdir', workdir]
  made = _run([sys.executable, 'experiments/generate_data.py', *config])
  assert made.returncode == 0, made.stderr
  out = _run([sys.executable, 'experiments/train_world_model.py', *config,
              '--config.data.seed=7'])
  assert out.returncode == 1, out.stderr
  assert out.stderr.startswith('train_world_model.py: error: The dataset at ') and (
      'data.seed: dataset has 0, this config 7' in out.stderr), out.stderr
  assert 'Traceback' not in out.stderr


def test_help_exits_0_and_lists_config_fields_with_defaults_and_comments():
  out = _run([sys.executable, 'experiments/plan.py', '--config', 'experiments/configs/wall.py:test',
              '--config.plan.budget=7', '--help'])
  assert out.returncode == 0, out.stderr
  assert '--workdir: Run directory' in out.stdout
  assert '--config.plan.budget=7' in out.stdout  # The override, shown.
  assert '--config.train.steps=30' in out.stdout  # The test variant's default.
  line = next(l for l in out.stdout.splitlines() if l.strip().startswith('--config.plan.horizon='))
  assert '# Model actions per plan' in line
  bare = _run([sys.executable, 'experiments/plan.py', '--help'])
  assert bare.returncode == 0 and 'wall.py' in bare.stdout and 'reproduce.py' in bare.stdout


def test_console_scripts_are_declared_and_run_outside_a_checkout(tmp_path):
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    scripts = tomllib.load(f)['project']['scripts']
  assert scripts == {name: f'experiments.{module}:run' for name, module in SCRIPTS.items()}
  exe = shutil.which('wmjax-train', path=os.path.dirname(sys.executable)) or shutil.which(
      'wmjax-train')
  if exe is None:
    pytest.skip('wmjax is not installed in this environment (no console scripts)')
  # Anywhere: a shipped config by name.
  out = _run([exe, '--config', 'wall:test', '--help'], cwd=str(tmp_path))
  assert out.returncode == 0, out.stderr
  assert '--config.train.steps=30' in out.stdout
  bad = _run([exe, '--config', 'wall:test', '--config.trian.steps=3', '--workdir', 'x'],
             cwd=str(tmp_path))
  assert bad.returncode == 1 and bad.stderr.strip() == (
      "wmjax-train: error: --config.trian.steps: config has no field 'trian'; did you mean "
      '--config.train.steps?')


def test_resolve_and_check_in_process():
  assert cli.resolve_config_path('wall') == os.path.join(cli.CONFIG_DIR, 'wall.py')
  assert cli.resolve_config_path('experiments/configs/wall.py').endswith('wall.py')
  with pytest.raises(cli.CommandLineError, match=r'did you mean pusht.py\?'):
    cli.resolve_config_path('experiments/configs/push.py')
  with pytest.raises(cli.CommandLineError, match='not found'):
    cli.resolve_config_path('elsewhere/wall.py')  # A path that names a folder is not redirected.
  _, config = cli.load_config('wall:test')
  cli.check_override(config, '--config.plan.cem.num_samples=3')
  cli.check_override(config, '--noconfig.plan.bounded')
  with pytest.raises(cli.CommandLineError, match='did you mean --config.plan.cem.num_samples'):
    cli.check_override(config, '--config.plan.cem.num_sample=3')
  with pytest.raises(cli.CommandLineError, match='config.seed = 0 has no fields'):
    cli.check_override(config, '--config.seed.x=3')
  # The rewritten argv names the file, so absl and ml_collections load the same config.
  argv = cli.preflight(['prog', '--config=wall:test', '--workdir', 'w'])
  assert argv[1] == f'--config={os.path.join(cli.CONFIG_DIR, "wall.py")}:test'
