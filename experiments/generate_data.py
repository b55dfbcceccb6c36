r"""Generates a task's offline dataset (PAPER.md section 5) into `<workdir>/dataset/`.

  python experiments/generate_data.py --config experiments/configs/wall.py:cpu \
      --workdir runs/wall

If `<workdir>/dataset/` already holds a valid dataset generated with the same task,
policy, seed and sizes, the binary says so and exits (pipelines can call it
unconditionally); `--overwrite` regenerates it. A dataset made with other settings is
never replaced without `--overwrite`. A PNG grid of rendered frames is written next to it,
`<workdir>/dataset_preview.png`, and a summary is printed (sizes, statistics, timings
and a task-specific coverage figure).
"""

from typing import Any

from absl import app
from absl import flags
from ml_collections import config_flags

from wmjax.experiment import cli
from wmjax.experiment import generate
from wmjax.experiment import runtime


def define_flags() -> tuple[Any, Any, Any]:
  """--config, --workdir, --overwrite (defined only when run as a script)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Task config, e.g. experiments/configs/wall.py:cpu.', lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, 'Run directory; the dataset goes to DIR/dataset.')
  overwrite = flags.DEFINE_bool('overwrite', False, 'Replace an existing dataset.')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir, overwrite


def main(argv, config_flag, workdir_flag, overwrite_flag):
  runtime.start(argv)
  try:
    summary = generate.generate(config_flag.value, workdir_flag.value,
                                overwrite=overwrite_flag.value)
  except FileExistsError as e:
    raise app.UsageError(str(e)) from e
  if not summary['skipped']:
    generate.print_summary(summary)


def run():
  """Entry point of `wmjax-generate-data` and of `python experiments/generate_data.py`."""
  cli.run(main, define_flags)


if __name__ == '__main__':
  run()
