r"""Evaluates a planner on a task with a trained world model (PAPER.md section 3).

  python experiments/plan.py --config experiments/configs/wall.py:cpu --workdir runs/wall \
      --config.plan.planner=cem [--config.plan.mode=open_loop] [--checkpoint DIR]

Loads the world model (`--checkpoint`, default `<workdir>/world_model`) and the dataset's
normalisation statistics (`<workdir>/dataset`), builds the planner named by `plan.planner`
(wmjax/experiment/planners.py), samples `plan.num_instances` evaluation problems with keys derived
from `plan.seed`, and runs every episode (MPC or open loop) in ONE jitted, batched call of
`wmjax.planning.mpc.evaluate`, sharded over the devices. Compilation is timed apart from the run.
With `plan.model=simulator` the true dynamics replace the world model's predictor: the ceiling a
perfect model could reach. `plan.simulator_cost=latent` (default) scores the simulated states with
the world model's own cost (its encoder on the rendered frames; the checkpoint is loaded for it);
`state` scores z-scored state vectors and `distance` the task's own distance to the goal (what
success tests); neither needs a world model.

Writes `<workdir>/plan/<run_name>/`:
  results.json   per-instance success, distances, replans to success; timings, budget, seeds,
                 planner settings, machine, jax version and matmul precision;
  summary.md     success rate with its 95% Wilson interval, mean final distance, time, budget;
  distance.png   distance to the goal over executed model actions, one line per instance;
  videos/        planned (left) vs executed (right) GIFs of the first `plan.num_videos` instances;
  done.json      written last (wmjax/io.py): the stage finished, with the sha256 of its results.
Every file is written atomically, under the workdir lock. The printed summary and results.json
report `num_nonfinite` (costs or gradients the planner guarded) and the plans left without a
finite cost; a run where every plan is non-finite fails (wmjax.checks.NonFiniteError).
"""

from typing import Any

from absl import flags
from ml_collections import config_flags

from wmjax.experiment import cli
from wmjax.experiment import plan
from wmjax.experiment import runtime


def define_flags() -> tuple[Any, Any, Any]:
  """--config, --workdir, --checkpoint (defined only when run as a script)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, 'Run directory (DIR/plan/<run_name> out).')
  checkpoint = flags.DEFINE_string(
      'checkpoint', None, 'World-model checkpoint directory (default: <workdir>/world_model).')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir, checkpoint


def main(argv, config_flag, workdir_flag, checkpoint_flag, distributed_flags=None):
  runtime.start(argv, distributed_flags)
  plan.evaluate(config_flag.value, workdir_flag.value, checkpoint_flag.value)


def run():
  """Entry point of `wmjax-plan` and of `python experiments/plan.py`."""
  cli.run(main, define_flags, distributed=True)


if __name__ == '__main__':
  run()
