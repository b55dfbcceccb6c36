r"""Trains a task's world model (PAPER.md section 2) on `<workdir>/dataset/`.

  python experiments/train_world_model.py --config experiments/configs/wall.py:cpu \
      --workdir runs/wall

Steps: load the dataset (made by experiments/generate_data.py) and split it by trajectory;
pretrain the conv encoder on rendered dataset frames if the config asks for one; train the
predictor and the proprio/action encoders by teacher forcing; write metrics to
`<workdir>/world_model/metrics.jsonl` and TensorBoard (`<workdir>/world_model/tensorboard`);
validate every `train.eval_every` steps on held-out trajectories; checkpoint every
`train.checkpoint_every` steps (the last `train.keep` plus the best by validation loss); finally
evaluate 1- and H-step open-loop latent prediction errors ('history' and 'markov' rollouts) beside
the "predict no change" baseline into `<workdir>/world_model/eval.json`.

Restarted in the same workdir, the run resumes from its latest intact checkpoint (a damaged one is
skipped with a warning and moved to `world_model/corrupt/`) and ends with the same parameters as an
uninterrupted run: every step's data and dropout keys are functions of (seed, step) only. The conv
encoder's pretraining resumes the same way, from `world_model/encoder_pretraining.msgpack`
(written every `train.checkpoint_every` pretraining steps, removed once the encoder is saved). A
checkpoint written with other training settings is refused unless --accept_changed_settings; a
non-finite loss or gradient stops the run before anything non-finite is saved; the workdir is
locked against a second writer; `world_model/done.json` is written last.
"""

from typing import Any

from absl import flags
from ml_collections import config_flags

from wmjax import distributed
from wmjax.experiment import cli
from wmjax.experiment import runtime
from wmjax.experiment import train


def define_flags() -> tuple[Any, Any, Any]:
  """--config, --workdir, --accept_changed_settings (defined only when run as a script)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string('workdir', None,
                                'Run directory (DIR/dataset in, DIR/world_model out).')
  accept = flags.DEFINE_bool(
      'accept_changed_settings', False, 'Resume a run whose checkpoint was written with other '
      'training settings (seed, data, train.*), continuing with the new ones.')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir, accept


def main(argv, config_flag, workdir_flag, accept_flag, distributed_flags=None):
  runtime.start(argv, distributed_flags)
  summary = train.train_and_evaluate(config_flag.value, workdir_flag.value,
                                     accept_changed_settings=accept_flag.value)
  if distributed.is_primary():
    train.print_summary(summary)


def run():
  """Entry point of `wmjax-train` and of `python experiments/train_world_model.py`."""
  cli.run(main, define_flags, distributed=True)


if __name__ == '__main__':
  run()
