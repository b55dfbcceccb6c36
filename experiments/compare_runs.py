r"""Planning rows side by side: success with 95% intervals, seconds per problem, the first plans'
predicted and realized costs, paired counts.

  python experiments/compare_runs.py --out_dir runs/pusht/compare --baseline cem \
    --run cem=runs/pusht/plan/cem_mpc --run adam=runs/pusht/plan/adam_mpc \
    --run ceiling=runs/pusht/plan/simulator/cem_mpc_latent

Each `--run LABEL=PATH` is a results.json of experiments/plan.py (or the run directory holding
it); rows keep the order given. With `--baseline LABEL` every other row is paired with it on the
problems both ran (rows of one task and plan.seed solve the same problems; a row whose problems
differ is refused): how many it solves that the baseline misses (gained), the reverse (lost),
and the two-sided sign test's p-value. Writes `compare.md` (the table), `compare.json` and
`compare.png` (one interval per row) into --out_dir, and prints the table.
"""

import json
import os
from typing import Any

from absl import flags

from wmjax.experiment import cli
from wmjax.experiment import compare
from wmjax.experiment import runtime


def define_flags() -> tuple[Any, Any, Any]:
  """--run, --baseline and --out_dir (defined only when run as a script)."""
  runs = flags.DEFINE_multi_string(
      'run', None, 'LABEL=PATH of one row: a results.json of experiments/plan.py or its run '
      'directory. Repeat for every row; rows keep this order.')
  baseline = flags.DEFINE_string('baseline', None, 'Label of the row the others are paired with.')
  out_dir = flags.DEFINE_string('out_dir', None, 'Where compare.md, .json and .png go.')
  flags.mark_flags_as_required(['run', 'out_dir'])
  return runs, baseline, out_dir


def parse_runs(specs: list[str]) -> list[tuple[str, str]]:
  """['label=path', ...] -> [(label, path), ...]; labels must be unique and non-empty."""
  out = []
  for s in specs:
    label, sep, path = s.partition('=')
    if not sep or not label or not path:
      raise cli.CommandLineError(f'--run {s!r}: expected LABEL=PATH (e.g. '
                                 'cem=runs/pusht/plan/cem_mpc).')
    if label in [l for l, _ in out]:
      raise cli.CommandLineError(f'--run: the label {label!r} is given twice; labels name rows '
                                 'and must be unique.')
    out.append((label, path))
  return out


def main(argv, runs_flag, baseline_flag, out_dir_flag):
  runtime.start(argv, cache=False)
  try:
    rows = [compare.load(label, path) for label, path in parse_runs(runs_flag.value)]
    table = compare.markdown(rows, baseline_flag.value)
  except (FileNotFoundError, ValueError) as e:  # A missing, damaged or unpairable row.
    raise cli.CommandLineError(str(e)) from e
  os.makedirs(out_dir_flag.value, exist_ok=True)
  with open(os.path.join(out_dir_flag.value, 'compare.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(out_dir_flag.value, 'compare.json'), 'w') as f:
    json.dump(dict(baseline=baseline_flag.value,
                   rows=compare.summary(rows, baseline_flag.value)), f, indent=1)
  compare.plot(rows, os.path.join(out_dir_flag.value, 'compare.png'))
  print(table)
  print(f'Results in {out_dir_flag.value}')


def run():
  """Entry point of `wmjax-compare` and of `python experiments/compare_runs.py`."""
  cli.run(main, define_flags)


if __name__ == '__main__':
  run()
