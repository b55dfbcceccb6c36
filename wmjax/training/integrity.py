"""Checksums of checkpoint items: what `Checkpointer.save` records and every read verifies.

A saved step holds two items, `state` (the TrainState arrays) and `meta` (JSON). At save, meta
gets `integrity.state`: {leaf path: {'sha256', 'shape', 'dtype'}} of every state leaf (hashing the
dtype, shape and raw bytes), and `meta_sha256`: the sha256 of meta's own other entries. At read,
`meta_digest` checks the meta item, `check_structure` tells another configuration's state
(a ValueError: not damage) from a damaged file before any array is read, and `verify_state`
re-hashes the restored arrays (a CorruptCheckpointError naming the item on any difference).
"""

import hashlib
import json
from typing import Any, Mapping

import jax
import numpy as np

from wmjax import checks
from wmjax import io

INTEGRITY_KEY = 'integrity'
META_SHA_KEY = 'meta_sha256'


class CorruptCheckpointError(io.InputError, ValueError):
  """A saved step cannot be read, or its content differs from what was saved."""


class CorruptCheckpointWarning(UserWarning):
  """A corrupt step was skipped (and moved aside) in favour of an older intact one."""


def _jsonable(x: Any) -> Any:
  return json.loads(json.dumps(x, default=lambda o: o.item() if isinstance(o, np.generic)
                               else str(o), sort_keys=True))


def leaf_digest(x: Any) -> dict[str, Any]:
  """{'sha256', 'shape', 'dtype'} of one array (its dtype, shape and raw bytes are hashed)."""
  x = np.asarray(x)
  h = hashlib.sha256(f'{x.dtype.str}{x.shape}'.encode())
  h.update(np.ascontiguousarray(x).tobytes())  # (0-d arrays come back 1-d, same bytes)
  return {'sha256': h.hexdigest(), 'shape': list(map(int, x.shape)), 'dtype': str(x.dtype)}


def _leaves(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(p, simple=True, separator='/'): leaf
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def state_integrity(host_state: Any) -> dict[str, dict[str, Any]]:
  """{leaf path: leaf_digest} of every leaf of a (host) state."""
  return {k: leaf_digest(v) for k, v in _leaves(host_state).items()}


def meta_digest(meta: Mapping[str, Any]) -> str:
  """sha256 of a meta dict without its own 'meta_sha256' entry."""
  body = {k: v for k, v in meta.items() if k != META_SHA_KEY}
  return hashlib.sha256(json.dumps(_jsonable(body), sort_keys=True).encode()).hexdigest()


def structure_diff(recorded: Mapping[str, str], expected: Mapping[str, str], this: str,
                   this_whole: str) -> list[str]:
  """One line per leaf path the checkpoint (`recorded`) and this run (`expected`) do not share,
  or whose specs differ; specs are strings ('shape [3]', '[3] float32'). `this` names this run's
  side in a spec line ('model'), `this_whole` in a missing-leaf line ('the model')."""
  diffs = []
  for k in sorted(set(recorded) | set(expected)):
    if k not in expected:
      diffs.append(f'{k}: in the checkpoint, not in {this_whole}')
    elif k not in recorded:
      diffs.append(f'{k}: in {this_whole}, not in the checkpoint')
    elif recorded[k] != expected[k]:
      diffs.append(f'{k}: checkpoint {recorded[k]}, {this} {expected[k]}')
  return diffs


def raise_if_differ(diffs: list[str], message: str) -> None:
  """Raises ValueError(`message` and the first 20 `diffs`, one per line) when there are any."""
  if diffs:
    shown = diffs[:20] + ([f'... and {len(diffs) - 20} more'] if len(diffs) > 20 else [])
    raise io.MismatchError(message + ':\n  ' + '\n  '.join(shown))


def check_structure(recorded: Mapping[str, Mapping[str, Any]], target: Any,
                    where: str = '') -> None:
  """Raises ValueError naming every leaf the checkpoint and `target` do not share, or with
  another shape or dtype (the optimiser or extra state of another configuration)."""
  spec = lambda shape, dtype: f'{list(map(int, shape))} {np.dtype(dtype)}'
  expected = {k: spec(np.shape(leaf), leaf.dtype if hasattr(leaf, 'dtype') else
                      np.asarray(leaf).dtype) for k, leaf in _leaves(target).items()}
  saved = {k: spec(r['shape'], r['dtype']) for k, r in recorded.items()}
  raise_if_differ(structure_diff(saved, expected, 'this run', "this run's state"),
                  f'Checkpoint {where} does not match the training state (optimiser or extra '
                  'state of another configuration)')


def verify_state(state: Any, meta: Mapping[str, Any], where: str) -> None:
  """Raises CorruptCheckpointError if restored arrays differ from the checksums in `meta` (or,
  for checkpoints without checksums, hold non-finite values)."""
  recorded = meta.get(INTEGRITY_KEY, {}).get('state')
  if recorded is not None:
    leaves = _leaves(state)
    missing = sorted(set(recorded) - set(leaves))
    if missing:
      raise CorruptCheckpointError(f'{where} lacks the saved arrays {missing[:5]}.')
    for k in sorted(recorded):
      if leaf_digest(leaves[k])['sha256'] != recorded[k]['sha256']:
        raise CorruptCheckpointError(
            f'{where} is corrupt: array {k} differs from the one saved (sha256 mismatch; a '
            'damaged or edited file).')
  bad = checks.nonfinite_leaves(state, limit=5)
  if bad:
    raise CorruptCheckpointError(f'{where} holds non-finite values: ' + '; '.join(bad))
