r"""Finetunes a trained world model with AWM or OWM (PAPER.md section 4).

  python experiments/finetune.py --config experiments/configs/wall.py:cpu \
      --config.finetune.method=adversarial --workdir runs/wall

Reads the base model from `<workdir>/world_model` (or `--config.finetune.pretrained`), checks that
it was trained on this task, model config and dataset, and writes `<workdir>/finetune_<method>/`:
orbax checkpoints (latest k + best by validation loss), metrics.jsonl, TensorBoard events and
eval.json (held-out open-loop errors beside "predict no change", as after training), so every
tool that reads a world model (experiments/plan.py --checkpoint, load_world_model) reads it too.

- adversarial (AWM): every batch is trained on predictor inputs perturbed by one FGSM step with
  random start, against the clean targets (`wmjax.training.adversarial_loss`); the radii live in
  the train state.
- online (OWM): every `finetune.online.every` steps, plans from dataset segments are executed in
  the simulator and the executed windows go into a replay buffer (part of the train state, so it is
  checkpointed); each batch mixes offline windows with buffer windows.

Killed and restarted in the same workdir, the run resumes from its latest checkpoint; every step's
data, dropout, attack and planning keys are functions of (seed, step) only.
"""

from typing import Any

from absl import flags
from ml_collections import config_flags

from wmjax import distributed
from wmjax.experiment import cli
from wmjax.experiment import finetune
from wmjax.experiment import runtime
from wmjax.experiment import train


def define_flags() -> tuple[Any, Any, Any]:
  """--config, --workdir, --accept_changed_settings (defined only when run as a script)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string(
      'workdir', None, 'Run directory (DIR/dataset and DIR/world_model in, '
      'DIR/finetune_<method> out).')
  accept = flags.DEFINE_bool(
      'accept_changed_settings', False, 'Resume a finetuning run whose checkpoint was written '
      'with other settings (seed, data, train.*, finetune.*), continuing with the new ones.')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir, accept


def main(argv, config_flag, workdir_flag, accept_flag, distributed_flags=None):
  runtime.start(argv, distributed_flags)
  summary = finetune.finetune(config_flag.value, workdir_flag.value,
                              accept_changed_settings=accept_flag.value)
  if distributed.is_primary():
    train.print_summary(summary, finetune.SUMMARY_KEYS)


def run():
  """Entry point of `wmjax-finetune` and of `python experiments/finetune.py`."""
  cli.run(main, define_flags, distributed=True)


if __name__ == '__main__':
  run()
