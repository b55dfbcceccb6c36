"""Command-line front door of the experiment binaries: one-line errors, help that lists configs.

Every binary (`wmjax-train`, `python experiments/train_world_model.py`, ...) ends in
`cli.run(main, define_flags)`. Before absl parses the flags, `run` checks what a first run gets
wrong and answers in one line (exit status 1) instead of a traceback:

  * a config file that does not exist (`--config experiments/configs/wal.py:cpu`), with the
    configs that do and the closest name;
  * an unknown variant (`:cpux`), with the variants;
  * an override of a field the config lacks (`--config.train.stepz=5`), with the closest field.

What a stage refuses once it runs (`wmjax.io.InputError`: config values its check rejects, e.g.
an unknown task or planner, a value out of range, settings that contradict each other; a missing
dataset or checkpoint, with the command that makes it; one made for another task, model, dataset
or training settings, with every difference; a damaged file; a workdir another process holds) is
reported the same way: the message, no traceback, exit status 1.

`--config` also takes a config shipped with wmjax by name, so the installed binaries work outside
a checkout: `--config wall:cpu` or `--config wall.py:cpu` (a path that exists always wins).
`-h` / `--help` (exit status 0) print the binary's description and flags and, with `--config`,
every config field with its value (after overrides) and the comment of the line that sets it;
without `--config`, the shipped configs and their variants.
"""

import ast
import difflib
import importlib.util
import os
import re
import sys
from typing import Any, Callable, Sequence

import ml_collections

# The shipped configs, `experiments/configs` beside the `wmjax` package (a checkout, or the
# `experiments` package a wheel installs next to it). Read as files, never imported.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'experiments', 'configs')
HELP_ARGS = ('-h', '--help', '--helpshort', '-?')
_CONFIG_PREFIXES = ('--config.', '--noconfig.', '-config.', '-noconfig.')


class CommandLineError(Exception):
  """A mistake on the command line, reported as one line."""


def shipped_configs() -> list[str]:
  """Names of the config files in experiments/configs (without .py), sorted."""
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith('.py') and not f.startswith('_') and f != 'common.py')


def shipped_config(name: str, variant: str) -> ml_collections.ConfigDict:
  """The shipped config `name` (e.g. 'wall') at `variant`, loaded from its file."""
  return _load_module(os.path.join(CONFIG_DIR, name + '.py')).get_config(variant)


def resolve_config_path(path: str) -> str:
  """An existing config file for `path` (as given, else a shipped config of that name).

  Raises:
    CommandLineError: neither exists; the message lists the shipped configs.
  """
  if os.path.isfile(path):
    return path
  name = os.path.basename(path)
  name = name[:-3] if name.endswith('.py') else name
  if name in shipped_configs() and os.path.dirname(path) in ('', 'experiments/configs',
                                                            os.path.join('experiments', 'configs')):
    return os.path.join(CONFIG_DIR, name + '.py')
  close = difflib.get_close_matches(name, shipped_configs(), n=1)
  hint = f' (did you mean {close[0]}.py?)' if close else ''
  raise CommandLineError(
      f'config file {path!r} not found{hint}. Shipped configs: {", ".join(shipped_configs())} '
      '(e.g. --config experiments/configs/wall.py:cpu, or --config wall:cpu anywhere).')


def load_config(spec: str) -> tuple[str, ml_collections.ConfigDict]:
  """(resolved path, config) for 'path[:variant]'. Errors of the config's `get_config` that a
  user can cause (ValueError, KeyError, TypeError, e.g. an unknown variant) become
  CommandLineError."""
  path, sep, variant = spec.partition(':')
  path = resolve_config_path(path)
  module = _load_module(path)
  try:
    config = module.get_config(variant) if sep else module.get_config()
  except (ValueError, KeyError, TypeError) as e:
    raise CommandLineError(f'--config {spec}: {_one_line(e)}') from e
  return path, config


def check_override(config: ml_collections.ConfigDict, arg: str) -> None:
  """Raises CommandLineError if `arg` (--config.a.b=v) names a field `config` lacks."""
  name = arg.lstrip('-')
  name = name[len('no'):] if name.startswith('noconfig.') else name
  dotted = name.split('=', 1)[0][len('config.'):]
  node, done = config, []
  for part in dotted.split('.'):
    key = re.sub(r'\[.*\]$', '', part)  # a.b[0] indexes a tuple field.
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      raise CommandLineError(
          f'--config.{dotted}: config.{".".join(done)} = {_show(node)} has no fields.')
    if key not in node:
      where = 'config' + ''.join('.' + d for d in done)
      rest = [re.sub(r'\[.*\]$', '', r) for r in dotted.split('.')[len(done) + 1:]]
      close = [_longest_path(node[c], done + [c], rest)
               for c in difflib.get_close_matches(key, list(node), n=1)]
      hint = f'; did you mean --config.{close[0]}?' if close else ''
      raise CommandLineError(f'--config.{dotted}: {where} has no field {key!r}{hint}')
    node = node[key]
    done.append(key)


def _longest_path(node: Any, done: list[str], rest: list[str]) -> str:
  """`done` extended by as much of `rest` as exists under `node`."""
  for part in rest:
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      break
    node = node[part]
    done = done + [part]
  return '.'.join(done)


def all_fields(config: Any, prefix: str = '') -> list[str]:
  """Dotted names of every leaf field of `config`, in order."""
  out = []
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, (ml_collections.ConfigDict, dict)) and value:
      out += all_fields(value, name + '.')
    else:
      out.append(name)
  return out


def describe_config(config: ml_collections.ConfigDict, path: str) -> str:
  """Every field with its value and, where one line sets it, that line's comment."""
  comments = _field_comments(path)
  lines = []
  for name in all_fields(config):
    value = config
    for part in name.split('.'):
      value = value[part]
    text = f'  --config.{name}={_show(value)}'
    comment = _comment_for(name, comments)
    if comment:
      text = f'{text:<56} # {comment}'
    lines.append(text)
  return '\n'.join(lines)


def describe_shipped() -> str:
  out = []
  for name in shipped_configs():
    module = _load_module(os.path.join(CONFIG_DIR, name + '.py'))
    first = (module.__doc__ or '').strip().splitlines()[:1]
    out.append(f'  {name + ".py":<14} {first[0] if first else ""}')
  return '\n'.join(out)


def preflight(argv: Sequence[str], doc: str = '', flag_help: str = '') -> list[str]:
  """Checks `argv` before absl parses it; returns it with --config resolved to a file.

  Prints help and exits 0 for -h/--help; raises CommandLineError for the mistakes listed in the
  module docstring.
  """
  argv = list(argv)
  spec, where = None, None
  for i, arg in enumerate(argv[1:], start=1):
    if arg in ('--config', '-config') and i + 1 < len(argv):
      spec, where = argv[i + 1], (i + 1, '')
    elif arg.startswith(('--config=', '-config=')):
      spec, where = arg.split('=', 1)[1], (i, arg.split('=', 1)[0] + '=')
  wants_help = any(a in HELP_ARGS for a in argv[1:])
  config = None
  if spec is not None:
    path, config = load_config(spec)
    _, sep, variant = spec.partition(':')
    resolved = path + (sep + variant)
    i, prefix = where
    argv[i] = prefix + resolved
    for arg in argv[1:]:
      if arg.startswith(_CONFIG_PREFIXES):
        check_override(config, arg)
  if wants_help:
    parts = [doc.strip(), '', 'Flags:', flag_help.rstrip()]
    if config is not None:
      for arg in argv[1:]:  # Show the values this command line would run with.
        if arg.startswith('--config.') and '=' in arg:
          name, value = arg[len('--config.'):].split('=', 1)
          _set(config, name, value)
      parts += ['', f'Config fields of {spec} (override any with --config.<field>=<value>):',
                describe_config(config, path)]
    else:
      parts += ['', 'Configs (--config <file>[:<variant>]; add --config ... --help to list a '
                'config\'s fields and defaults):', describe_shipped()]
    print('\n'.join(parts))
    raise SystemExit(0)
  return argv


def run(main: Callable[..., Any], define_flags: Callable[[], tuple], *,
        distributed: bool = False) -> None:
  """Defines the binary's flags, checks the command line (`preflight`) and runs `main` under
  absl: `main(argv, *flag_holders[, distributed_flags=...])`; a `CommandLineError` from `main`
  exits with status 1 and one line, a `wmjax.io.InputError` (a refused config; a missing,
  damaged, locked or mismatched input) with status 1 and its message, each without a traceback."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from wmjax import distributed as distributed_lib  # pylint: disable=g-import-not-at-top
  from wmjax import io  # pylint: disable=g-import-not-at-top
  holders = define_flags()
  distributed_flags = distributed_lib.define_flags() if distributed else None
  module = sys.modules[main.__module__]
  prog = os.path.basename(sys.argv[0])
  try:
    argv = preflight(sys.argv, module.__doc__ or '', _flag_help(flags.FLAGS, holders,
                                                                 distributed_flags))
  except CommandLineError as e:
    print(f'{prog}: error: {e}', file=sys.stderr)
    raise SystemExit(1) from None
  kwargs = {'distributed_flags': distributed_flags} if distributed else {}

  def guarded(args):  # Mistakes `main` finds are reported without a traceback too.
    try:
      return main(args, *holders, **kwargs)
    except (CommandLineError, io.InputError) as e:
      print(f'{prog}: error: {e}', file=sys.stderr)
      raise SystemExit(1) from None

  app.run(guarded, argv=argv)


# ------------------------------------------------------------------------------------ helpers
def _load_module(path: str) -> Any:
  name = '_wmjax_config_' + re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[-1] if text else type(e).__name__


def _show(value: Any) -> str:
  if isinstance(value, ml_collections.FieldReference):
    value = value.get()
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    return repr(dict(value))
  return repr(value) if isinstance(value, str) else str(value)


def _set(config: ml_collections.ConfigDict, name: str, value: str) -> None:
  """Shows an override in --help (absl parses it for real when the binary runs)."""
  *parents, leaf = name.split('.')
  node = config
  for p in parents:
    node = node[p]
  try:
    parsed = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    parsed = value
  try:
    node[leaf] = parsed
  except (TypeError, ValueError):
    pass  # absl reports a wrong type when the binary runs.


_ASSIGN = re.compile(r'^\s*([A-Za-z_]\w*(?:\.\w+)+)\s*=.*?#\s?(.*)$')
_CONTINUED = re.compile(r'^\s*#\s?(.*)$')


def _field_comments(path: str) -> dict[tuple[str, ...], set[str]]:
  """Comments of `x.a.b = ...  # comment` lines of the config file and of the shipped config
  modules it imports, keyed by the attribute chain without its variable, ('a', 'b')."""
  out: dict[tuple[str, ...], set[str]] = {}
  with open(path) as f:
    imported = re.findall(r'^from experiments\.configs import (\w+)', f.read(), re.M)
  sources = [path] + [os.path.join(CONFIG_DIR, m + '.py') for m in imported]
  for source in sources:
    with open(source) as f:
      lines = f.read().splitlines()
    for i, line in enumerate(lines):
      m = _ASSIGN.match(line)
      if not m or "'" in m.group(1):
        continue
      text = [m.group(2).strip()]
      column = line.index('#')
      for nxt in lines[i + 1:]:  # Comment lines aligned under it continue the comment.
        c = _CONTINUED.match(nxt)
        if not c or nxt.index('#') != column:
          break
        text.append(c.group(1).strip())
      out.setdefault(tuple(m.group(1).split('.')[1:]), set()).add(' '.join(text))
  return out


def _comment_for(name: str, comments: dict[tuple[str, ...], set[str]]) -> str:
  parts = tuple(name.split('.'))
  for n in range(len(parts), 0, -1):  # The longest matching chain, if it is unambiguous.
    found = comments.get(parts[-n:])
    if found:
      return next(iter(found)) if len(found) == 1 else ''
  return ''


def _flag_help(flag_values: Any, holders: Sequence[Any], distributed_flags: Any) -> str:
  names = [h.name for h in tuple(holders) + tuple(distributed_flags or ())]
  out = []
  for name in names:
    flag = flag_values[name]
    default = '' if flag.default is None else f' (default: {flag.default_as_str})'
    out.append(f'  --{name}: {flag.help}{default}')
  out.append('  -h, --help: this text (--helpfull: every absl flag)')
  return '\n'.join(out)
