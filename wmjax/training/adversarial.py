"""Adversarial world modelling (AWM, PAPER.md section 4): train on FGSM-perturbed predictor inputs.

Fast adversarial training (FGSM with a random start, Wong et al. 2020) applied to the predictor
inputs of the history frames: the visual latent, the proprio embedding and the action embedding,
each with its own radius eps = lambda * std(group). The world model is then trained on the
perturbed inputs against the clean targets.

  config = AdversarialConfig()                             # Paper defaults (section 4).
  extra = init_extra(model, params, frozen, first_batch, config)
  state = create_train_state(full, tx, extra=extra)
  step = make_train_step(adversarial_loss(model, config), tx, stateful=True)

The radii are explicit state in `TrainState.extra` (`{'radii': Radii}`), never a hidden cache.
"""

import dataclasses
import numbers
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from wmjax.training.losses import encode_window
from wmjax.training.losses import predict_loss
from wmjax.training.losses import PredictorInputs
from wmjax.types import Metrics, Params, PRNGKey

RADII_MODES = ('first_batch', 'per_batch')

# Keys derived from the step key; the final loss uses the step key itself for its dropout, so
# with zero radii the step matches plain teacher forcing bit for bit.
_ATTACK_STREAM = 1
_CLEAN_STREAM = 2


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
  """Static (hashable) settings of the attack; defaults are the paper's (PAPER.md section 4).

  Attributes:
    lambda_visual: radius of the visual latent, as a multiple of its std (paper 0.05).
    lambda_proprio: radius of the proprio embedding, multiple of its std (paper 0.02).
    lambda_action: radius of the action embedding, multiple of its std (paper 0.02).
    step_size: ascent step as a multiple of eps (paper 1.25, Wong et al. 2020).
    num_steps: ascent steps (1 = FGSM as in the paper; more = PGD).
    radii: 'first_batch' (paper: eps fixed from the first minibatch, kept in `TrainState.extra`)
      or 'per_batch' (the authors' code: eps recomputed from every batch).
    clean_weight: w in loss = (1 - w) * adversarial + w * clean; 0 in the paper.
    random_start: delta starts from U(-eps, eps) (paper) instead of zero.
  """
  lambda_visual: float = 0.05
  lambda_proprio: float = 0.02
  lambda_action: float = 0.02
  step_size: float = 1.25
  num_steps: int = 1
  radii: str = 'first_batch'
  clean_weight: float = 0.0
  random_start: bool = True

  def __post_init__(self):
    check_config(self)


def check_config(config: AdversarialConfig) -> AdversarialConfig:
  """Raises ValueError naming the field and its valid range if a setting is invalid."""
  for name in ('lambda_visual', 'lambda_proprio', 'lambda_action'):
    value = getattr(config, name)
    if not value >= 0:  # Also rejects NaN.
      raise ValueError(f'AdversarialConfig.{name} must be >= 0; got {value}.')
  if not config.step_size > 0:
    raise ValueError(f'AdversarialConfig.step_size must be > 0 (a multiple of eps); got '
                     f'{config.step_size}.')
  steps = config.num_steps
  if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
    raise ValueError(f'AdversarialConfig.num_steps must be an integer >= 1; got '
                     f'{config.num_steps!r}.')
  if config.radii not in RADII_MODES:
    raise ValueError(f'AdversarialConfig.radii must be one of {RADII_MODES}; got '
                     f'{config.radii!r}.')
  if not 0.0 <= config.clean_weight <= 1.0:
    raise ValueError(f'AdversarialConfig.clean_weight must be in [0, 1]; got '
                     f'{config.clean_weight}.')
  return config


class Radii(NamedTuple):
  """Perturbation radius of each channel group (PAPER.md section 4, step 1).

  Attributes:
    visual: () float32, eps of the visual latent.
    proprio: () float32, eps of the proprio embedding.
    actions: () float32, eps of the action embedding.
  """
  visual: jax.Array
  proprio: jax.Array
  actions: jax.Array


def _as_radii(radii: Any) -> Radii:
  """Radii from a Radii, a (visual, proprio, actions) sequence or a mapping (e.g. a restore)."""
  if isinstance(radii, Mapping):
    return Radii(**radii)
  return Radii(*radii)


def _lambdas(config: AdversarialConfig) -> PredictorInputs:
  return PredictorInputs(visual=config.lambda_visual, proprio=config.lambda_proprio,
                         actions=config.lambda_action)


def compute_radii(inputs: PredictorInputs, config: AdversarialConfig) -> Radii:
  """eps = lambda * std of each channel group over the batch (PAPER.md section 4, step 1).

  Args:
    inputs: clean predictor inputs of the history frames: visual (B, T, N, Dv), proprio
      (B, T, Ep), actions (B, T, Ea).
    config: the lambdas.

  Returns:
    `Radii` of () float32 scalars; constants (no gradient flows through them).
  """
  # Section 4 step 1: one std per group, over every value of the group in the batch.
  radii = jax.tree.map(
      lambda x, lam: lam * jnp.std(jax.lax.stop_gradient(x).astype(jnp.float32)),
      tuple(inputs), tuple(_lambdas(config)))
  return Radii(*radii)


def init_extra(model: Any, params: Params, frozen: Params, batch: dict[str, jax.Array],
               config: AdversarialConfig) -> dict[str, Radii]:
  """The explicit state of `adversarial_loss`: the radii of the first minibatch.

  Args:
    model: a `WorldModel`.
    params: trainable parameters ('proprio_encoder', 'action_encoder', 'predictor').
    frozen: frozen parameters ({'encoder': ...}).
    batch: the first training batch (see `encode_window`).
    config: the lambdas.

  Returns:
    {'radii': Radii}, to pass as `create_train_state(..., extra=...)`. In 'first_batch' mode
    these radii stay fixed for the whole run (paper, section 4 step 2); in 'per_batch' mode they
    are overwritten every step (and seed the state's structure, so jit traces once).
  """
  inputs, _ = encode_window(model, params, frozen, batch)
  return {'radii': compute_radii(inputs, config)}


InputsLoss = Callable[[PredictorInputs, PRNGKey], jax.Array]


def attack(loss_of_inputs: InputsLoss, inputs: PredictorInputs, radii: Radii, key: PRNGKey,
           config: AdversarialConfig) -> PredictorInputs:
  """FGSM with random start (Wong et al. 2020), or PGD when `config.num_steps > 1`.

  delta ~ U(-eps, eps) per group (zero if not `random_start`); then `num_steps` times
  delta <- clip(delta + step_size * eps * sign(grad_delta loss), -eps, eps).

  Args:
    loss_of_inputs: `loss_of_inputs(inputs, key) -> ()`, the loss to ascend; `key` is its dropout
      key (each ascent step gets its own).
    inputs: clean predictor inputs of the history frames: visual (B, T, N, Dv), proprio
      (B, T, Ep), actions (B, T, Ea).
    radii: eps per group, () each.
    key: PRNG key of the attack (random start and the ascent steps' dropout).
    config: step size, number of steps, random start.

  Returns:
    Perturbed `PredictorInputs` (same shapes), inputs + delta with |delta| <= eps per group; the
    perturbation carries no gradient (gradients still reach the clean inputs).
  """
  with jax.named_scope('attack'):
    eps = PredictorInputs(*(jnp.asarray(e, jnp.float32) for e in _as_radii(radii)))
    clean = jax.lax.stop_gradient(inputs)
    start_key, steps_key = jax.random.split(key)
    if config.random_start:
      # Section 4 step 3: delta ~ U(-eps, eps), independently per group.
      keys = PredictorInputs(*jax.random.split(start_key, len(eps)))
      delta = jax.tree.map(
          lambda x, e, k: jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0) * e, clean, eps,
          keys)
    else:
      delta = jax.tree.map(jnp.zeros_like, clean)

    grad_fn = jax.grad(lambda d, k: loss_of_inputs(jax.tree.map(jnp.add, clean, d), k))

    def ascend(delta, step_key):
      g = grad_fn(delta, step_key)
      # Section 4 step 3: delta <- clip(delta + 1.25 eps sign(grad), -eps, eps).
      delta = jax.tree.map(
          lambda d, g, e: jnp.clip(d + config.step_size * e * jnp.sign(g), -e, e), delta, g, eps)
      return delta, None

    delta, _ = jax.lax.scan(ascend, delta, jax.random.split(steps_key, config.num_steps))
    # Section 4 step 4: only the predictor inputs of the history frames are perturbed.
    delta = jax.lax.stop_gradient(delta)
    return PredictorInputs(*jax.tree.map(jnp.add, tuple(inputs), tuple(delta)))


StatefulLossFn = Callable[[Params, Params, dict[str, jax.Array], PRNGKey, dict[str, Any]],
                          tuple[jax.Array, tuple[Metrics, dict[str, Any]]]]


def adversarial_loss(model: Any, config: AdversarialConfig, *,
                     deterministic: bool = False) -> StatefulLossFn:
  """The AWM training loss (PAPER.md section 4), for `make_train_step(..., stateful=True)`.

  Args:
    model: a `WorldModel`.
    config: an `AdversarialConfig`.
    deterministic: True disables dropout (in the attack and in the loss).

  Returns:
    loss_fn(params, frozen, batch, key, extra) -> (loss (), (metrics, new_extra)). `batch` as in
    `encode_window` ({'proprio': (B, T+1, P), 'actions': (B, T, fs*A), ...}); `extra` holds
    {'radii': Radii} (from `init_extra`; optional in 'per_batch' mode). The loss is the
    teacher-forcing loss of the perturbed inputs against the clean targets, mixed with the clean
    loss when `clean_weight > 0`. Metrics: 'loss', 'mse_visual', 'mse_proprio' (of the perturbed
    inputs), 'adv/eps_visual', 'adv/eps_proprio', 'adv/eps_action' and, when clean_weight > 0,
    'loss_clean' and 'loss_total' (the mixed loss that is minimised). `new_extra` is `extra`
    with the radii used ('per_batch': this batch's).
  """
  check_config(config)

  def loss_fn(params, frozen, batch, key, extra):
    inputs, targets = encode_window(model, params, frozen, batch)
    if config.radii == 'per_batch':
      # Section 4 step 2 (the authors' code): eps recomputed from every batch.
      radii = compute_radii(inputs, config)
      extra = {**extra, 'radii': radii}
    else:
      # Section 4 step 2 (paper): eps fixed from the first minibatch, held in the train state.
      if 'radii' not in extra:
        raise ValueError("radii='first_batch' needs extra['radii']; build the state with "
                         'create_train_state(..., extra=init_extra(model, params, frozen, '
                         f'first_batch, config)). Got extra keys {sorted(extra)}.')
      radii = _as_radii(extra['radii'])

    # The attack sees the parameters as constants: only delta is differentiated.
    attack_params = jax.lax.stop_gradient(params)

    def loss_of_inputs(x, k):
      return predict_loss(model, attack_params, x, targets, k, deterministic=deterministic)[0]

    perturbed = attack(loss_of_inputs, inputs, radii, jax.random.fold_in(key, _ATTACK_STREAM),
                       config)
    # Section 4 step 5: perturbed input, clean target; the dropout key is the plain loss's.
    loss, metrics = predict_loss(model, params, perturbed, targets, key,
                                 deterministic=deterministic)
    metrics = dict(metrics)
    if config.clean_weight > 0:
      clean_loss, _ = predict_loss(model, params, inputs, targets,
                                   jax.random.fold_in(key, _CLEAN_STREAM),
                                   deterministic=deterministic)
      # Optional clean term (not in the paper, which trains on the perturbed input only).
      loss = (1.0 - config.clean_weight) * loss + config.clean_weight * clean_loss
      metrics['loss_clean'] = clean_loss
      metrics['loss_total'] = loss
    metrics['adv/eps_visual'] = radii.visual
    metrics['adv/eps_proprio'] = radii.proprio
    metrics['adv/eps_action'] = radii.actions
    return loss, (metrics, extra)

  return loss_fn
