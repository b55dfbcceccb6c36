"""The run directory every stage shares, and the readers of what earlier stages left in it.

  <workdir>/
    dataset/            meta.json + arrays.npz (docs/datasets.md); dataset_preview.png beside it
    world_model/        the base model: orbax checkpoints, metrics.jsonl, eval.json
    finetune_<method>/  the AWM ('adversarial') or OWM ('online') finetuned model, same layout
    diagnose/           gap.json, gap.md
    plan/<run_name>/    results.json, summary.md, distance.png, videos/

Each output directory ends with `done.json` (`wmjax.io.mark_done`).
"""

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from wmjax import data as data_lib
from wmjax import io
from wmjax import parallel
from wmjax import training
from wmjax.training import checkpoint as checkpoint_lib

DATASET_DIR = 'dataset'
PREVIEW_FILE = 'dataset_preview.png'
WORLD_MODEL_DIR = 'world_model'
FINETUNE_PREFIX = 'finetune_'
DIAGNOSE_DIR = 'diagnose'
PLAN_DIR = 'plan'
EVAL_FILE = 'eval.json'
GAP_FILE = 'gap.json'
GAP_TABLE_FILE = 'gap.md'
RESULTS_FILE = 'results.json'
SUMMARY_FILE = 'summary.md'


def finetune_dir(workdir: str, method: str) -> str:
  """The output directory of finetuning method `method` ('adversarial' | 'online')."""
  return os.path.join(workdir, FINETUNE_PREFIX + method)


def load_data(config: ml_collections.ConfigDict, workdir: str, env: Any):
  """Loads and checks `<workdir>/dataset`; returns (dataset, train arrays, val arrays or None)."""
  path = os.path.join(workdir, DATASET_DIR)
  if not os.path.isdir(path):
    raise io.MissingInputError(
        f'No dataset at {path}. Generate it first:\n  python experiments/generate_data.py '
        f'--config experiments/configs/{config.task}.py:{config.variant} --workdir {workdir}')
  ds = data_lib.load_dataset(path, task=config.task, expected=dict(
      state_size=env.state_size, proprio_size=env.proprio_size, action_size=env.action_size,
      num_hist=int(config.num_hist), frameskip=int(config.frameskip),
      image_size=int(config.image_size)))
  check_generation(config, ds.meta, path)
  train_ds, val_ds = data_lib.split(ds, float(config.data.val_fraction), int(config.data.seed))
  val = data_lib.to_device(val_ds) if val_ds.num_trajectories else None
  return ds, data_lib.to_device(train_ds), val


def generation_spec(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config fields that determine a dataset's content (batch size does not)."""
  return {
      'task': config.task,
      'policy': config.data.policy,
      'seed': int(config.data.seed),
      'num_trajectories': int(config.data.num_trajectories),
      'trajectory_length': int(config.data.trajectory_length),
  }


def check_generation(config: ml_collections.ConfigDict, meta: dict, path: str) -> None:
  """Raises ValueError when the config's `data` section describes another dataset than the one at
  `path` (its meta's `generation`), naming each differing field and the flags that match it: the
  config a checkpoint records then describes the data it was trained on."""
  found = meta.get('generation') or {}
  spec = generation_spec(config)
  fields = [k for k in spec if k in found and found[k] != spec[k]]
  if fields:
    raise io.MismatchError(
        f'The dataset at {path} was generated with other data settings than this config:\n  '
        + '\n  '.join(f'data.{k}: dataset has {found[k]!r}, this config {spec[k]!r}'
                       for k in fields)
        + '\nPass the dataset\'s settings ('
        + ' '.join(f'--config.data.{k}={found[k]}' for k in fields)
        + ') or generate the dataset this config describes in another workdir.')


class ModelInputs(NamedTuple):
  """What training and finetuning both start from (`model_inputs`)."""

  mesh: Any
  env: Any
  dataset: Any
  train: Any
  val: Any
  model_kwargs: dict
  model: Any
  meta: dict


def model_inputs(config: ml_collections.ConfigDict, workdir: str, batch_size: int,
                 batch_field: str, mesh=None) -> ModelInputs:
  """The mesh (default: every device; `batch_size` must divide across it, else an error naming
  `batch_field`), the task, `<workdir>/dataset` split and on device, the world model the config
  describes and its checkpoint meta."""
  from wmjax import envs  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_divisible(int(batch_size), mesh, batch_field)
  env = envs.load(config.task, clip_actions=config.clip_actions)
  ds, train, val = load_data(config, workdir, env)
  model_kwargs = training.world_model_kwargs(config, env)
  meta = training.make_meta(config, model_kwargs=model_kwargs,
                            dataset_fingerprint=ds.meta['arrays_sha256'][:16])
  return ModelInputs(mesh, env, ds, train, val, model_kwargs,
                     training.build_world_model(model_kwargs), meta)


def load_model(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None, env):
  """(model, params, meta) of the checkpoint, checked against the task and action size."""
  path = checkpoint or os.path.join(workdir, WORLD_MODEL_DIR)
  if not os.path.isdir(path):
    raise io.MissingInputError(
        f'No world model at {path}. Train one first:\n  python experiments/train_world_model.py '
        f'--config experiments/configs/{config.task}.py:{config.variant} --workdir {workdir}\n'
        'or pass --checkpoint, or plan with --config.plan.model=simulator '
        '--config.plan.simulator_cost=state.')
  model, params, meta = training.load_world_model(path, which=config.plan.checkpoint)
  if meta.get('task') != config.task:
    raise io.MismatchError(f'The world model at {path} was trained on task '
                           f'{meta.get("task")!r}; this config plans on {config.task!r}.')
  action_size = int(config.frameskip) * env.action_size
  if int(model.action_dim) != action_size:
    raise io.MismatchError(f'The world model at {path} takes model actions of size '
                           f'{model.action_dim}; this config needs frameskip * A = '
                           f'{config.frameskip} * {env.action_size} = {action_size} (set '
                           'config.frameskip to match the model).')
  return model, params, dict(meta, checkpoint_path=os.path.abspath(path))


def load_stats(config, workdir: str, env, meta: dict | None) -> tuple[data_lib.Stats, str]:
  """Normalisation statistics: the checkpoint meta's, else `<workdir>/dataset` (checked against
  the checkpoint's dataset fingerprint), else (simulator only) the env's nominal ones."""
  if meta is not None and 'stats' in meta:
    return data_lib.stats_from_meta(meta), 'checkpoint meta'
  path = os.path.join(workdir, DATASET_DIR)
  if os.path.isdir(path):
    ds_meta = data_lib.read_meta(path, task=config.task)
    want = None if meta is None else meta.get('dataset_fingerprint')
    got = ds_meta['arrays_sha256'][:16]
    if want is not None and want != got:
      raise io.MismatchError(f'{path} is not the dataset the world model was trained on '
                             f'(fingerprint {got}, checkpoint expects {want}); its normalisation '
                             'would not match.')
    return data_lib.stats_from_meta(ds_meta), path
  if meta is not None:
    raise io.MissingInputError(f'No dataset at {path}: planning needs the normalisation '
                               'statistics the world model was trained with.')
  return data_lib.nominal_stats(env), 'env nominal (no dataset)'


def load_pretrained(config, workdir: str, meta: dict[str, Any], target_params):
  """Full parameters of the base model finetuning starts from, checked against this run's task,
  model and dataset.

  Args:
    config: run config.
    workdir: run directory.
    meta: this run's checkpoint meta (task, model_config, dataset_fingerprint are compared).
    target_params: abstract full parameters of the configured model (structure, shapes, dtypes).

  Returns:
    (params, info): params shaped like `target_params`; info names the checkpoint and its step.
  """
  f = config.finetune
  path = f.pretrained or os.path.join(workdir, WORLD_MODEL_DIR)
  if not os.path.isdir(path):
    raise io.MissingInputError(
        f'No pretrained world model at {path}. Train one first:\n  python '
        f'experiments/train_world_model.py --config experiments/configs/{config.task}.py:'
        f'{config.variant} --workdir {workdir}\nor set --config.finetune.pretrained=DIR.')
  params, info = load_params(
      path, f.pretrained_checkpoint, meta, target_params, keys=checkpoint_lib.COMPARED_META,
      flag='finetune.pretrained', label='pretrained',
      choose='--config.finetune.pretrained_checkpoint or --config.finetune.pretrained')
  info.pop('encoder_pretraining')
  return params, info


def load_params(path: str, which: str, meta: dict[str, Any], target_params, *,
                keys: tuple[str, ...], flag: str, label: str, choose: str = ''):
  """Full parameters (trainable and frozen) of the world-model checkpoint at `path`.

  Args:
    path: a world-model output directory or its checkpoints directory.
    which: 'best' (falls back to 'latest' when the run saved no best) or 'latest'.
    meta: this run's checkpoint meta; its entries under `keys` must equal the stored ones.
    target_params: abstract full parameters of the configured model (structure, shapes, dtypes).
    keys: meta entries compared (e.g. task and model_config; dataset_fingerprint too when the
      checkpoint must come from this run's data).
    flag: the config field naming `path`, for error messages.
    label: what the checkpoint is to this run ('pretrained', 'initial'), for error messages.
    choose: the flags that pick another checkpoint, named when this one is damaged (default
      `--config.<flag>`).

  Returns:
    (params, info): params shaped like `target_params`; info names the checkpoint and its step.

  Raises:
    ValueError: no such checkpoint, or one of another task, model or (if compared) dataset.
    CorruptCheckpointError: the checkpoint is damaged.
  """
  trainable, frozen = training.split_params(target_params)
  expected = training.TrainState(step=None, params=trainable, frozen=frozen, opt_state=None)

  def check(stored, where):
    checkpoint_lib.check_meta(stored, meta, keys=keys, where=where)
    checkpoint_lib.check_shapes(stored.get('shapes', {}),
                                checkpoint_lib.param_shapes(expected), where=where)

  raw, info = _restore(path, which, check, flag=flag, label=label, choose=choose)
  full = {**raw['params'], **raw['frozen']}
  return jax.tree.map(lambda t, x: jnp.asarray(x, t.dtype), target_params, full), info


# The model settings an observation encoder's parameters depend on.
ENCODER_FIELDS = ('encoder', 'conv', 'dinov2', 'image_size')


def load_encoder(path: str, meta: dict[str, Any], *, flag: str):
  """The frozen observation encoder of the latest world-model checkpoint at `path`, for a run
  whose predictor may differ (same task and ENCODER_FIELDS of the model).

  Returns:
    (encoder_params, info): info names the checkpoint, its step and its encoder pretraining.

  Raises:
    ValueError: no such checkpoint, or one of another task or encoder.
    CorruptCheckpointError: the checkpoint is damaged.
  """
  def encoder_config(m):
    kwargs = m.get('model_kwargs', {})
    return {'task': m.get('task'), **{k: kwargs.get(k) for k in ENCODER_FIELDS}}

  def check(stored, where):
    checkpoint_lib.check_meta({'encoder': encoder_config(stored)},
                              {'encoder': encoder_config(meta)}, keys=('encoder',), where=where)

  raw, info = _restore(path, 'latest', check, flag=flag, label='encoder')
  return raw['frozen']['encoder'], info


def _restore(path, which, check, *, flag, label, choose=''):
  """(raw state, info) of the checkpoint `which` at `path`, after `check(stored_meta, where)`."""
  if not os.path.isdir(path):
    raise io.MissingInputError(f'No world model at {path} ({flag}).')
  ckpt = training.Checkpointer(checkpoint_lib.resolve_checkpoint_dir(path), async_save=False)
  hint = f'Choose another one ({choose or "--config." + flag}) or retrain.'
  try:
    if which == 'best' and ckpt.latest_step('best') is None:
      which = 'latest'
    try:
      stored = ckpt.read_meta(which)
    except training.CorruptCheckpointError as e:
      raise training.CorruptCheckpointError(f'The {label} checkpoint is damaged: {e} {hint}'
                                            ) from e
    if stored is None:
      raise ValueError(f'No {which} checkpoint in {ckpt.directory} ({flag}).')
    where = f'{ckpt.directory} ({which}, step {stored.get("step")})'
    try:
      check(stored, where)
    except ValueError as e:
      raise io.MismatchError(f'The {label} checkpoint does not match this config '
                             f'(--config.{flag}). {e}') from None
    try:
      raw, _ = ckpt.restore_raw(which, stored['step'])
    except training.CorruptCheckpointError as e:
      raise training.CorruptCheckpointError(f'The {label} checkpoint is damaged: {e} {hint}'
                                            ) from e
  finally:
    ckpt.close()
  return raw, {'path': os.path.abspath(ckpt.directory), 'which': which,
               'step': stored.get('step'), 'val_loss': stored.get('val_loss'),
               'encoder_pretraining': stored.get('encoder_pretraining')}
