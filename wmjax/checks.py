"""Finite and range checks of numbers: parameter trees, arrays, config values.

Host-side helpers that return what is wrong (paths, field names) so callers can raise one error
naming every problem; `NonFiniteError` is what training and planning raise when a run produced a
non-finite value it cannot recover from, and `ConfigError` what the stages' config checks raise.
"""

import math
from typing import Any, Mapping

import jax
import numpy as np

from wmjax import io


class NonFiniteError(FloatingPointError):
  """A run produced NaN or infinite values (loss, gradients, parameters, plans)."""


class ConfigError(io.InputError, ValueError):
  """A config with invalid or contradictory values, found before any work: the message names
  every problem and the choices. The binaries report it without a traceback."""


def raise_config_errors(problems: list[str], what: str) -> None:
  """Raises ConfigError('Invalid <what>:' and one problem per line) when there are any."""
  if problems:
    raise ConfigError(f'Invalid {what}:\n  ' + '\n  '.join(problems))


def nonfinite_leaves(tree: Any, limit: int | None = None) -> list[str]:
  """'<path>: <n> non-finite of <size> (first at <index>)' for each floating-point leaf of
  `tree` (host or device arrays) holding NaN or +-inf; at most `limit` entries."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    x = np.asarray(jax.device_get(leaf))
    if not np.issubdtype(x.dtype, np.inexact):
      continue
    bad = ~np.isfinite(x)
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      name = jax.tree_util.keystr(path, simple=True, separator='/') or '<root>'
      out.append(f'{name}: {int(bad.sum())} non-finite of {x.size} (first at index {first})')
      if limit is not None and len(out) >= limit:
        break
  return out


def nonfinite_numbers(config: Any, prefix: str = '') -> list[str]:
  """'a.b=nan' for every float in a (nested) ConfigDict / mapping / sequence that is NaN or
  infinite."""
  if hasattr(config, 'to_dict'):
    config = config.to_dict()
  out = []
  if isinstance(config, Mapping):
    for k, v in config.items():
      out += nonfinite_numbers(v, f'{prefix}.{k}' if prefix else str(k))
  elif isinstance(config, (list, tuple)):
    for i, v in enumerate(config):
      out += nonfinite_numbers(v, f'{prefix}[{i}]')
  elif isinstance(config, (float, np.floating)) and not math.isfinite(float(config)):
    out.append(f'{prefix}={float(config)}')
  return out


def range_problem(value: Any, name: str, *, low: float | None = None,
                  high: float | None = None, low_open: bool = False,
                  high_open: bool = False) -> str | None:
  """None if `value` is a finite number in the interval, else a message naming `name`.

  Example: `range_problem(lr, 'train.predictor_lr', low=0)` -> 'train.predictor_lr must be a
  finite number >= 0; got nan'.
  """
  lo = '' if low is None else f'{">" if low_open else ">="} {low:g}'
  hi = '' if high is None else f'{"<" if high_open else "<="} {high:g}'
  want = ' and '.join(x for x in (lo, hi) if x)
  msg = f'{name} must be a finite number{" " + want if want else ""}; got {value!r}'
  if isinstance(value, bool):
    return msg
  try:
    x = float(value)
  except (TypeError, ValueError):
    return msg
  if not math.isfinite(x):
    return msg
  if low is not None and (x <= low if low_open else x < low):
    return msg
  if high is not None and (x >= high if high_open else x > high):
    return msg
  return None


def _lookup(config: Any, dotted: str) -> Any:
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def config_problems(config: Any, ranges: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """Every non-finite number of `config`, and every field of `ranges` outside its range.

  Args:
    config: a ConfigDict (or nested mapping).
    ranges: {dotted field: keyword arguments of `range_problem`}, e.g.
      {'train.predictor_lr': {'low': 0}}; fields missing from `config` are skipped.

  Returns:
    One message per problem (empty when none), each naming the field.
  """
  out, checked = [], set()
  for name, bounds in ranges.items():
    try:
      value = _lookup(config, name)
    except (KeyError, AttributeError, TypeError):
      continue
    checked.add(name)
    problem = range_problem(value, name, **bounds)
    if problem:
      out.append(problem)
  for entry in nonfinite_numbers(config):
    name = entry.split('=')[0]
    if name not in checked:
      out.append(f'{entry}: numbers in the config must be finite')
  return out
