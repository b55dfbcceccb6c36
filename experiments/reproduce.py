r"""Reproduces the paper's comparison end to end (PAPER.md section 6) on our tasks.

  python experiments/reproduce.py --config experiments/configs/reproduce.py:cpu --workdir runs/repro

For each task: generate data, train the base world model, finetune it with AWM and with OWM,
measure the train-test gap, then evaluate planners on every model: GD, Adam and CEM, open loop and
under MPC (the grid of Table 1), MPPI and GradCEM, the true-dynamics ceiling (the simulator as the
model), Adam with bounded actions, and a budget sweep for success-vs-time curves. Every planner gets
the same executed-step budget per episode and the same problems and seeds (rows the config sizes
down run on the first n of them; the tables then give Adam's and CEM's success on those n).

Layout: `<workdir>/<task>/` is an ordinary run directory (dataset/, world_model/,
finetune_<method>/, diagnose/, plan/<model>/<row>/); each stage is skipped when its output exists,
so an interrupted run continues where it stopped. Outputs: `<workdir>/results.json`,
`<workdir>/results.md` (tables with 95% intervals, budgets, seeds and timing, beside the published
numbers) and `<workdir>/<task>/success_vs_time.png`.
"""

import os
from typing import Any

from absl import flags
from ml_collections import config_flags

from wmjax.experiment import cli
from wmjax.experiment import reproduce
from wmjax.experiment import reproduce_report
from wmjax.experiment import runtime


def define_flags() -> tuple[Any, Any]:
  """--config and --workdir (defined only when run as a script)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Reproduction config, e.g. experiments/configs/reproduce.py:cpu.',
      lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, 'Output directory (one run dir per task).')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir


def main(argv, config_flag, workdir_flag):
  runtime.start(argv)
  results = reproduce.reproduce(config_flag.value, workdir_flag.value)
  print(reproduce_report.markdown(results))
  print(f'Results in {os.path.join(workdir_flag.value, "results.md")}')


def run():
  """Entry point of `wmjax-reproduce` and of `python experiments/reproduce.py`."""
  cli.run(main, define_flags)


if __name__ == '__main__':
  run()
