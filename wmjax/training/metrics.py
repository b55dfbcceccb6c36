"""Host-side metric writer: one JSON line per record plus TensorBoard scalars."""

import json
import math
import os
from typing import Any, Mapping

import numpy as np

from wmjax import io


def _to_float(v: Any) -> float | None:
  x = float(np.asarray(v))
  return x if math.isfinite(x) else None


class MetricWriter:
  """Appends `{'step', 'split', **scalars}` records to `<logdir>/metrics.jsonl` and TensorBoard.

  Host-side I/O only: call between jitted steps with already-fetched values.

  Args:
    logdir: output directory (created).
    tensorboard: also write TensorBoard event files under `<logdir>/tensorboard`.
  """

  def __init__(self, logdir: str, *, tensorboard: bool = True):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, 'metrics.jsonl')
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(logdir, 'tensorboard'))

  def truncate_after(self, step: int) -> None:
    """Drops JSONL records with step > `step` (work lost before a resumed run redoes it)."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [ln for ln in f if ln.strip()]
    kept = []
    for ln in lines:
      try:
        rec = json.loads(ln)
      except json.JSONDecodeError:
        continue  # A line cut short by a killed process.
      if rec.get('step', 0) <= step:
        kept.append(json.dumps(rec) + '\n')
    io.write_text(self.path, ''.join(kept))

  def write(self, step: int, scalars: Mapping[str, Any], split: str = 'train') -> None:
    """Writes one record; non-finite values are stored as null in JSON."""
    values = {k: _to_float(v) for k, v in scalars.items()}
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': int(step), 'split': split, **values}) + '\n')
    if self._tb is not None:
      for k, v in values.items():
        if v is not None:
          self._tb.add_scalar(f'{split}/{k}', v, int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
  """All records of a metrics.jsonl file (a directory holding one is accepted)."""
  if os.path.isdir(path):
    path = os.path.join(path, 'metrics.jsonl')
  with open(path) as f:
    return [json.loads(ln) for ln in f if ln.strip()]
