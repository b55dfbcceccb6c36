"""The README's quick start stays true: CI runs exactly its test command."""

import os
import tomllib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path):
  with open(os.path.join(_ROOT, *path)) as f:
    return f.read()


def test_ci_runs_the_readme_test_command():
  lines = [l for l in _read('.ci', 'run').splitlines() if l and not l.startswith(('#', 'set ', 'cd '))]
  assert len(lines) == 1, lines
  assert lines[0] in _read('README.md').splitlines()


def test_readme_main_command_uses_existing_binaries_and_configs():
  readme = _read('README.md')
  main = next(l for l in readme.splitlines() if l.startswith('python3 -m venv') and 'pytest' not in l)
  with open(os.path.join(_ROOT, 'pyproject.toml'), 'rb') as f:
    scripts = tomllib.load(f)['project']['scripts']
  for token in main.split():
    if token.startswith(('experiments/', 'experiments\\')):
      assert os.path.exists(os.path.join(_ROOT, token.split(':')[0])), token
    if token.startswith('wmjax-'):
      assert token in scripts, token  # An installed console script.
  assert 'pip install -q ' in main  # The install step is quiet unless it fails.
