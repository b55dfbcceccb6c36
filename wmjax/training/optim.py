"""AdamW with separate learning rates for the predictor and the proprio/action encoders.

PAPER.md section 2 (pretraining, DINO-WM): predictor lr 5e-4 in the authors' code (5e-5 in the paper
text), proprio/action encoders 5e-4, AdamW. Section 4 (finetuning): predictor 1e-5, encoders 5e-4.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

# Top-level parameter group -> optimiser label.
GROUP_LABELS = {
    'predictor': 'predictor',
    'proprio_encoder': 'encoders',
    'action_encoder': 'encoders',
    'encoder': 'frozen',  # Never updated, even if passed as trainable.
}
SCHEDULES = ('constant', 'cosine')


def param_labels(params: Mapping[str, Any]) -> dict[str, Any]:
  """Optimiser label of every leaf: 'predictor', 'encoders' or 'frozen', by top-level group."""
  unknown = sorted(set(params) - set(GROUP_LABELS))
  if unknown:
    raise ValueError(
        f'Unknown parameter groups {unknown}; expected some of {sorted(GROUP_LABELS)}.')
  return {k: jax.tree.map(lambda _, lbl=GROUP_LABELS[k]: lbl, v) for k, v in params.items()}


def make_schedule(lr: float, *, steps: int, warmup_steps: int = 0, schedule: str = 'constant',
                  final_fraction: float = 0.0) -> optax.Schedule:
  """Learning-rate schedule: linear warmup, then constant or cosine decay to lr * final_fraction."""
  if schedule not in SCHEDULES:
    raise ValueError(f'Unknown lr schedule {schedule!r}; choose one of {SCHEDULES}.')
  if lr < 0 or warmup_steps < 0:
    raise ValueError(
        f'Need lr >= 0 and warmup_steps >= 0, got lr={lr}, warmup_steps={warmup_steps}.')
  if schedule == 'constant':
    main = optax.constant_schedule(lr)
  else:
    main = optax.cosine_decay_schedule(lr, max(steps - warmup_steps, 1), alpha=final_fraction)
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, lr, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def _adamw(schedule: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
  # inject_hyperparams keeps the current lr in the state, so steps can report it.
  return optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=weight_decay)


def make_optimizer(train_config: Any) -> optax.GradientTransformation:
  """AdamW per parameter group from a `train` config section.

  Args:
    train_config: fields predictor_lr, encoder_lr, weight_decay, steps, warmup_steps, lr_schedule
      ('constant' | 'cosine'), grad_clip (global-norm clip, 0 disables).

  Returns:
    A transformation over {'proprio_encoder', 'action_encoder', 'predictor'} (+ 'encoder', frozen).
  """
  c = train_config
  kw = dict(steps=int(c.steps), warmup_steps=int(c.warmup_steps), schedule=c.lr_schedule)
  tx = optax.multi_transform(
      {'predictor': _adamw(make_schedule(c.predictor_lr, **kw), c.weight_decay),
       'encoders': _adamw(make_schedule(c.encoder_lr, **kw), c.weight_decay),
       'frozen': optax.set_to_zero()},
      param_labels)
  if c.grad_clip < 0:
    raise ValueError(f'grad_clip must be >= 0 (0 disables clipping), got {c.grad_clip}.')
  if c.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(c.grad_clip), tx)
  return tx


def learning_rates(opt_state: optax.OptState) -> dict[str, jax.Array]:
  """Current learning rate of every labelled group found in an optimiser state.

  Works for states built by `make_optimizer` (and any multi_transform of inject_hyperparams
  transforms); groups without an injected learning rate are skipped.

  Returns:
    {'lr/<label>': ()}, e.g. {'lr/predictor', 'lr/encoders'}.
  """
  out = {}

  def visit(node, label):
    if isinstance(node, optax.MultiTransformState):
      for name, inner in node.inner_states.items():
        visit(inner, name)
    elif isinstance(node, optax.MaskedState):
      visit(node.inner_state, label)
    elif isinstance(node, optax.InjectStatefulHyperparamsState):
      if 'learning_rate' in node.hyperparams and label is not None:
        out[f'lr/{label}'] = jnp.asarray(node.hyperparams['learning_rate'])
    elif isinstance(node, (tuple, list)):
      for inner in node:
        visit(inner, label)

  visit(opt_state, None)
  return out
