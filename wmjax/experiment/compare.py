"""Planning rows side by side: success with its 95% interval, time, and paired counts.

Every row is one `results.json` of `experiments/plan.py` (or `reproduce.py`'s rows). Rows made
with the same task and plan.seed solve the same problems (problem i from the same key), so two
rows can be compared problem by problem: `paired` counts the problems one solves and the other
misses, and `sign_test_p` says how surprising that split is if the two were equally good. Rows
are checked to share their problems (start and goal states) before they are paired; a row of
another task or seed is refused, not paired by accident.

`markdown` writes the table, `plot` the figure (one interval per row, time at the right).
"""

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from wmjax import io
from wmjax.experiment import plan_report

_REQUIRED = ('task', 'num_instances', 'num_success', 'protocol', 'timing', 'instances')
_GRADIENT = ('gd', 'adam')


@dataclasses.dataclass(frozen=True)
class Row:
  """One planning row: its label and the parts of its results.json a comparison reads."""
  label: str
  path: str
  task: str
  planner: str
  model: str        # 'world_model' or 'simulator' (the ceiling rows).
  mode: str         # 'mpc' or 'open_loop'.
  settings: str     # The planner's budget in words, e.g. 'cem 60 x 30 (top 6)'.
  seconds: float    # Batched planning time per problem (episode time / problems).
  success: dict[int, bool]              # Problem index -> solved.
  problems: dict[int, np.ndarray]       # Problem index -> start and goal state, concatenated.
  # Medians over the problems of the first plan's cost as the model predicted it and as the
  # simulator realized it (None where the row has none: a ceiling predicts nothing, rows
  # written before realized costs were recorded realize nothing).
  predicted_cost: float | None = None
  realized_cost: float | None = None

  @property
  def n(self) -> int:
    return len(self.success)

  @property
  def num_success(self) -> int:
    return sum(self.success.values())


def load(label: str, path: str) -> Row:
  """The row in `path` (a results.json, or the run directory holding one).

  Raises:
    FileNotFoundError: no results.json there.
    ValueError: the file is not JSON, or lacks what a planning row writes.
  """
  file = os.path.join(path, 'results.json') if os.path.isdir(path) else path
  if not os.path.isfile(file):
    raise io.MissingInputError(f'Row {label!r}: no results.json at {path!r} (give a '
                               'results.json of experiments/plan.py or the run directory that '
                               'holds it).')
  try:
    with open(file) as f:
      r = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'Row {label!r}: {file} is not valid JSON ({e}).') from e
  missing = [k for k in _REQUIRED if not isinstance(r, dict) or k not in r]
  if missing:
    raise ValueError(f'Row {label!r}: {file} is not a planning results.json (missing '
                     f'{", ".join(missing)}).')
  inst = r['instances']
  solved = sum(bool(i['success']) for i in inst)
  if (len(inst), solved) != (r['num_instances'], r['num_success']):
    raise ValueError(f'Row {label!r}: {file} is inconsistent: {len(inst)} instances with '
                     f'{solved} solved, but num_instances {r["num_instances"]} and num_success '
                     f'{r["num_success"]}.')
  p = r['protocol']
  predicted = _median([i.get('first_plan_cost') for i in inst])
  realized = _median([i.get('first_plan_realized_cost') for i in inst])
  if p['model'] == 'simulator':  # Through the simulator the planner's cost is the realized one.
    predicted, realized = None, predicted
  return Row(label=label, path=file, task=r['task'], planner=p['planner'], model=p['model'],
             mode=p['mode'], settings=p.get('settings', p['planner']),
             seconds=float(r['timing']['seconds_per_instance_amortised']),
             success={int(i['index']): bool(i['success']) for i in inst},
             problems={int(i['index']): np.concatenate([np.ravel(i['init_state']),
                                                        np.ravel(i['goal_state'])])
                       for i in inst},
             predicted_cost=predicted, realized_cost=realized)


def _median(values: Sequence[Any]) -> float | None:
  """The median of the finite values, None if there is none."""
  x = np.asarray([v for v in values if v is not None], np.float64)
  x = x[np.isfinite(x)]
  return float(np.median(x)) if x.size else None


def sign_test_p(gained: int, lost: int) -> float:
  """Two-sided exact sign test of `gained` against `lost` discordant problems (1.0 if none)."""
  n = gained + lost
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def paired(base: Row, other: Row) -> dict[str, Any]:
  """Problem-by-problem counts of `other` against `base` on the problems both ran.

  Returns:
    dict(common: problems both ran, gained: solved by `other` only, lost: by `base` only,
    both: solved by both, p: the sign test's p-value of gained against lost).

  Raises:
    ValueError: the rows are of different tasks, share no problem, or a shared index holds
      a different problem (another plan.seed or problem sampler).
  """
  if base.task != other.task:
    raise ValueError(f'Rows {base.label!r} ({base.task}) and {other.label!r} ({other.task}) are '
                     'of different tasks; only rows of one task can be paired.')
  common = sorted(set(base.success) & set(other.success))
  if not common:
    raise ValueError(f'Rows {base.label!r} and {other.label!r} share no problem index.')
  for i in common:
    a, b = base.problems[i], other.problems[i]
    # Rows that batch a different number of problems sample them in batches of another size,
    # which moves the states by float rounding (~1e-4 on PushT's pixel coordinates).
    if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-3):
      raise ValueError(f'Rows {base.label!r} and {other.label!r} hold different problems at '
                       f'index {i} (start or goal state differ): they were sampled with another '
                       'plan.seed or sampler, so they cannot be paired.')
  gained = sum(other.success[i] and not base.success[i] for i in common)
  lost = sum(base.success[i] and not other.success[i] for i in common)
  both = sum(base.success[i] and other.success[i] for i in common)
  return dict(common=len(common), gained=gained, lost=lost, both=both,
              p=sign_test_p(gained, lost))


def _find(rows: Sequence[Row], label: str) -> Row:
  for r in rows:
    if r.label == label:
      return r
  raise ValueError(f'Unknown baseline {label!r}; choose one of {[r.label for r in rows]}.')


def summary(rows: Sequence[Row], baseline: str | None = None) -> list[dict[str, Any]]:
  """One dict per row: success, interval, time and (with `baseline`) its paired counts."""
  base = _find(rows, baseline) if baseline else None
  out = []
  for r in rows:
    lo, hi = plan_report.wilson_interval(r.num_success, r.n)
    d = dict(label=r.label, path=r.path, task=r.task, planner=r.planner, model=r.model,
             mode=r.mode, settings=r.settings, n=r.n, num_success=r.num_success,
             success_rate=r.num_success / r.n, ci95=(lo, hi), seconds_per_problem=r.seconds,
             first_plan_cost_median=dict(predicted=r.predicted_cost, realized=r.realized_cost))
    if base is not None and r is not base:
      d['paired'] = paired(base, r)
    out.append(d)
  return out


def markdown(rows: Sequence[Row], baseline: str | None = None) -> str:
  """The rows as a markdown table (paired columns against `baseline` when given)."""
  head = ('| row | planner | model | mode | success % [95% CI] | n | s per problem | '
          'first plan cost, median: predicted / realized |')
  rule = '|---|---|---|---|---|---|---|---|'
  num = lambda x: '-' if x is None else f'{x:.3g}'
  if baseline:
    head += f' paired against {baseline}: gained / lost (both ran; sign test p) |'
    rule += '---|'
  lines = [head, rule]
  for d in summary(rows, baseline):
    lo, hi = d['ci95']
    line = (f'| {d["label"]} | {d["settings"]} | {d["model"]} | {d["mode"]} | '
            f'{100 * d["success_rate"]:.0f} [{100 * lo:.0f}-{100 * hi:.0f}] | {d["n"]} | '
            f'{d["seconds_per_problem"]:.3g} | {num(d["first_plan_cost_median"]["predicted"])} '
            f'/ {num(d["first_plan_cost_median"]["realized"])} |')
    if baseline:
      p = d.get('paired')
      line += (' (baseline) |' if p is None else
               f' {p["gained"]} / {p["lost"]} ({p["common"]}; p = {p["p"]:.2g}) |')
    lines.append(line)
  return '\n'.join(lines) + '\n'


def plot(rows: Sequence[Row], path: str, title: str = '') -> None:
  """Success % with its 95% interval per row, top to bottom in the given order; circles plan
  through the world model, squares through the simulator; blue gradient planners, orange the
  rest; seconds per problem at the right."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  full = max(r.n for r in rows)
  fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * len(rows)))
  for y, d in enumerate(summary(rows)):
    lo, hi = d['ci95']
    x = 100 * d['success_rate']
    ax.errorbar([x], [-y], xerr=[[x - 100 * lo], [100 * hi - x]], capsize=3,
                fmt='s' if d['model'] == 'simulator' else 'o',
                color='C0' if d['planner'] in _GRADIENT else 'C1')
    ax.annotate(f'{d["seconds_per_problem"]:.2g} s', (1.01, -y), xycoords=('axes fraction', 'data'),
                va='center', fontsize=8)
  ax.set_yticks([-y for y in range(len(rows))])
  ax.set_yticklabels([r.label + ('' if r.n == full else f' (n={r.n})') for r in rows], fontsize=8)
  ax.set_xlim(0, 100)
  ax.set_xlabel('success % (95% Wilson CI); right: seconds per problem')
  ax.grid(axis='x', alpha=0.3)
  ax.set_title(title or f'{rows[0].task}: blue gradient planners, orange sampling; '
               'squares: through the simulator', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
