r"""The train-test gap, measured (PAPER.md sections 1 and 6): a world model's prediction error on
held-out offline trajectories beside its error on trajectories its planner induces.

  python experiments/diagnose_gap.py --config experiments/configs/wall.py:cpu --workdir runs/wall

For the base model (`<workdir>/world_model`) and every finetuned one found
(`<workdir>/finetune_adversarial`, `<workdir>/finetune_online`):
- offline: open-loop latent error up to `plan.horizon` steps on held-out dataset windows;
- own plans: one plan per evaluation problem (the configured planner, open loop, from the same
  problems and seeds as experiments/plan.py) made with this model, executed in the simulator from
  the true start; the model then predicts the executed frames from the start frame and the plan;
- own plans, executed actions: the same trajectories, with the model fed the actions the
  simulator executed instead of the planned ones. Only tasks that clip differ from 'own
  plans': PointMaze (its reference clips forces to [-1, 1]) and Wall / PushT run with
  `clip_actions=True`; Wall and PushT execute plans unclipped, as their references do, so
  there the two rows agree and 'actions out of range' tells how far plans left the data;
- base plans: the same, on the trajectories the base model's plans induced (one fixed set of
  trajectories for every model).
Errors are latent MSEs over visual + proprio channels (the training loss) for the one-frame
('markov') rollout GBP plans with and the 'history' rollout; "no change" predicts z_k = z_0.
Writes `<workdir>/diagnose/gap.json` and `gap.md`.
"""

from typing import Any

from absl import flags
from ml_collections import config_flags

from wmjax.experiment import cli
from wmjax.experiment import gap
from wmjax.experiment import runtime


def define_flags() -> tuple[Any, Any]:
  """--config and --workdir (defined only when run as a script)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, 'Run directory (DIR/diagnose out).')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir


def main(argv, config_flag, workdir_flag):
  runtime.start(argv)
  r = gap.diagnose(config_flag.value, workdir_flag.value)
  print(gap.markdown(r))
  print(f'Results in {r["out_dir"]}')


def run():
  """Entry point of `wmjax-diagnose-gap` and of `python experiments/diagnose_gap.py`."""
  cli.run(main, define_flags)


if __name__ == '__main__':
  run()
