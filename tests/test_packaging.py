"""wmjax installs beside other JAX code: a light core, ranges not pins, quiet imports.

The default run checks, offline, that the core (the `dependencies` of pyproject.toml and what they
pull in) is enough for `wmjax.planning`: it builds a venv that sees only the installed
distributions of that closure (links into this environment's site-packages) and the `wmjax`
package, then runs the README's planner snippet there.

The slow test (`python -m pytest -m slow tests/test_packaging.py`, needs the package registry,
a few minutes and ~1 GB of downloads the first time) builds a venv with jax, flax, optax and numpy
at the lower bounds pyproject.toml declares, installs wmjax into it with plain `pip install` and
checks that pip kept that jax, then runs the planner tests there: the lower bounds are tested,
and a user's own supported jax survives `pip install wmjax`.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from limits import TIMEOUT_S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']


def _readme_block(heading: str) -> str:
  """The first ```python block after `heading` in README.md."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  section = text[text.index(heading):]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def _norm(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def _closure(requirements: list[str]) -> dict[str, importlib.metadata.Distribution]:
  """The installed distributions `requirements` pull in (with the extras they ask for)."""
  seen, todo, done = {}, [Requirement(r) for r in requirements], set()
  while todo:
    req = todo.pop()
    key = _norm(req.name)
    for extra in [''] + sorted(req.extras):
      if (key, extra) in done:
        continue
      done.add((key, extra))
      seen[key] = dist = importlib.metadata.distribution(req.name)
      for r in dist.requires or []:
        sub = Requirement(r)
        if sub.marker is None or sub.marker.evaluate({'extra': extra}):
          todo.append(sub)
  return seen


def _link_distributions(dists, site_packages: str) -> None:
  """Links every top-level file and folder of `dists` into `site_packages`."""
  for dist in dists.values():
    base = str(dist.locate_file(''))
    tops = {str(f).split('/')[0] for f in dist.files or [] if not str(f).startswith('..')}
    for top in tops:
      src, dst = os.path.join(base, top), os.path.join(site_packages, top)
      if os.path.exists(src) and not os.path.exists(dst) and top != '__pycache__':
        os.symlink(src, dst)


def _core_venv(tmp_path):
  venv = str(tmp_path / 'core')
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True)
  site = subprocess.run([os.path.join(venv, 'bin', 'python'), '-c',
                         'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                        check=True, capture_output=True, text=True).stdout.strip()
  _link_distributions(_closure(_pyproject()['dependencies']), site)
  os.symlink(os.path.join(ROOT, 'wmjax'), os.path.join(site, 'wmjax'))
  return os.path.join(venv, 'bin', 'python')


def test_core_dependencies_are_ranges_with_lower_bounds():
  project = _pyproject()
  for spec in project['dependencies'] + [r for extra in project['optional-dependencies'].values()
                                         for r in extra]:
    req = Requirement(spec)
    assert not any(s.operator == '==' for s in req.specifier), spec
  names = {_norm(Requirement(r).name) for r in project['dependencies']}
  assert names == {'jax', 'flax', 'optax', 'numpy'}
  extras = project['optional-dependencies']
  assert {'sim', 'train', 'media', 'brax', 'notebooks', 'referee', 'test', 'all'} <= set(extras)
  assert extras['referee'] == ['gym-pusht', 'gymnasium-robotics']
  test = ' '.join(extras['test'])
  for needed in ('referee', 'brax', 'sim', 'train', 'media', 'pytest', 'nbmake', 'chex'):
    assert needed in test, needed


def test_core_alone_runs_the_readme_planner_snippet(tmp_path):
  python = _core_venv(tmp_path)
  heavy = ['mujoco', 'matplotlib', 'mediapy', 'tensorboardX', 'brax', 'ml_collections', 'tqdm',
           'chex']
  check = (f'import importlib.util\n'
           f'present = [m for m in {heavy!r} if importlib.util.find_spec(m)]\n'
           f'assert not present, present\n'
           f'import wmjax.planning, wmjax.planning.mpc\n')
  env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'VIRTUAL_ENV'))}
  env['JAX_PLATFORMS'] = 'cpu'
  out = subprocess.run([python, '-I', '-c', check + _readme_block('## Using the planners')],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=TIMEOUT_S)
  assert out.returncode == 0, out.stderr[-3000:]
  shape, cost = out.stdout.split(')')[-2:]
  assert '(8, 5, 2' in out.stdout and float(cost) < 0.1, out.stdout


def test_readme_planner_snippet_runs_as_pasted():
  namespace = {}
  exec(compile(_readme_block('## Using the planners'), 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  assert namespace['actions'].shape == (8, 5, 2)
  assert float(namespace['costs'].max()) < 0.1


def test_importing_the_simulators_is_quiet():
  if importlib.util.find_spec('warp') is not None:
    pytest.skip('warp is installed: mujoco.mjx imports it without a message')
  code = 'import wmjax.envs.pusht, wmjax.envs.pointmaze, brax.envs; print("ok")'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), cwd=ROOT, timeout=TIMEOUT_S)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout == 'ok\n', out.stdout


def _floors() -> dict[str, str]:
  out = {}
  for spec in _pyproject()['dependencies']:
    req = Requirement(spec)
    (low,) = [s.version for s in req.specifier if s.operator == '>=']
    out[_norm(req.name)] = low
  return out


@pytest.mark.slow
def test_lowest_versions_install_keep_their_jax_and_plan(tmp_path):
  floors = _floors()
  venv = str(tmp_path / 'lowest')
  subprocess.run([sys.executable, '-m', 'venv', venv], check=True)
  pip = [os.path.join(venv, 'bin', 'python'), '-m', 'pip']
  pins = [f'{name}=={version}' for name, version in floors.items()]
  pins.append(f'jaxlib=={floors["jax"]}')
  got = subprocess.run(pip + ['install', '-q', *pins, 'pytest'], capture_output=True, text=True)
  if got.returncode != 0 and 'No matching distribution' not in got.stderr:
    pytest.skip(f'package registry unreachable: {got.stderr[-500:]}')
  assert got.returncode == 0, got.stderr[-3000:]
  # A clean copy of the project (building writes into the source tree).
  src = str(tmp_path / 'src')
  shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
      '.venv', '.git', '.jax_cache', 'runs', '__pycache__', '*.egg-info', 'build'))
  got = subprocess.run(pip + ['install', '-q', src], capture_output=True, text=True)
  assert got.returncode == 0, got.stderr[-3000:]
  versions = subprocess.run(
      [os.path.join(venv, 'bin', 'python'), '-c',
       'import importlib.metadata as m; print(*[m.version(p) for p in '
       f'{list(floors) + ["jaxlib"]!r}])'], capture_output=True, text=True, check=True)
  assert versions.stdout.split() == list(floors.values()) + [floors['jax']]
  tests = subprocess.run(
      [os.path.join(venv, 'bin', 'python'), '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       'tests/test_planners.py', 'tests/test_objectives.py'],
      capture_output=True, text=True, cwd=src,
      env=dict(os.environ, JAX_PLATFORMS='cpu', WMJAX_TEST_CACHE=str(tmp_path / 'cache')))
  assert tests.returncode == 0, tests.stdout[-3000:]
