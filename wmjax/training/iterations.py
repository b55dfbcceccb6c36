"""Training iterations on a dataset held on the device: teacher forcing, AWM and OWM.

An iteration is `step(state, arrays, root) -> (state, metrics)`, jitted (the state donated): it
samples the global batch from `arrays` (`wmjax.data.WindowArrays`) with the keys
`fold_in(fold_in(root, stream), state.step)`, functions of (seed, step) only, so a resumed run
repeats an uninterrupted one; splits the batch across the mesh's devices; renders its pixels when
the model reads them; and takes the train step (`make_train_step`). On a mesh the state and
arrays are replicated (`wmjax.parallel.replicate` them) and the gradients all-reduced by the
compiler.

  * `teacher_forcing_iteration`: the base model's training step (PAPER.md section 2);
  * `adversarial_iteration` (AWM, section 4): the same on predictor inputs perturbed by FGSM,
    with the attack radii fixed from the first batch into `TrainState.extra`;
  * `online_iteration` (OWM, section 4): batches mixing offline windows with a replay buffer
    (`wmjax.data.replay`, in `TrainState.extra`) that `collect` fills with windows executed from
    the plans of any `Planner` (`wmjax.training.online`).
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from wmjax import data as data_lib
from wmjax import parallel
from wmjax.data import replay
from wmjax.planning.base import Planner
from wmjax.training import adversarial
from wmjax.training import losses
from wmjax.training import online
from wmjax.training.step import make_train_step
from wmjax.training.train_state import full_params
from wmjax.training.train_state import split_params
from wmjax.types import PRNGKey

Batch = dict[str, jax.Array]
# (state, arrays, root key) -> (state, metrics).
StepFn = Callable[[Any, data_lib.WindowArrays, PRNGKey], tuple[Any, dict[str, jax.Array]]]


class Streams(NamedTuple):
  """Sub-streams of the run's root key: batches, dropout and (OWM) planning."""

  data: int
  dropout: int
  online: int = -1


def stream_key(root: PRNGKey, stream: int, step: jax.Array) -> PRNGKey:
  """The key of `stream` at `step`: fold_in(fold_in(root, stream), step)."""
  return jax.random.fold_in(jax.random.fold_in(root, stream), step)


@dataclasses.dataclass(frozen=True)
class Windows:
  """How iterations draw their windows.

  Attributes:
    env: the task (renders pixels).
    num_hist: history frames per window.
    frameskip: env steps per model action.
    image_size: rendered image side.
    pixels: render pixels (the model's encoder reads them).
    mesh: the devices the batch is split across; None: one device, plain `jit`.
  """

  env: Any
  num_hist: int
  frameskip: int
  image_size: int
  pixels: bool
  mesh: Optional[Mesh] = None

  def sample(self, arrays: data_lib.WindowArrays, key: PRNGKey, batch_size: int) -> Batch:
    """`batch_size` random windows, without pixels."""
    return data_lib.sample_windows(arrays, key, batch_size, self.num_hist, self.frameskip)

  def prepare(self, batch: Batch) -> Batch:
    """Splits a batch across the mesh, then renders its pixels (per shard) if the model reads
    them and the batch does not carry the encoder's tokens already."""
    if self.mesh is not None:
      batch = parallel.constrain_batch(batch, self.mesh)
    if self.pixels and 'visual' not in batch:
      batch = data_lib.add_pixels(self.env, batch, self.image_size)
    return batch

  def jit_step(self, fn: StepFn) -> StepFn:
    """Jits `fn(state, arrays, root) -> (state, metrics)`, donating the state; on a mesh with
    every input and output replicated."""
    if self.mesh is None:
      return jax.jit(fn, donate_argnums=0)
    rep = parallel.replicated(self.mesh)
    return jax.jit(fn, in_shardings=(rep, rep, rep), out_shardings=(rep, rep), donate_argnums=0)

  def jit_init(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Jits an initialiser of `TrainState.extra` (replicated on a mesh)."""
    return jax.jit(fn) if self.mesh is None else jax.jit(
        fn, out_shardings=parallel.replicated(self.mesh))


class Iteration(NamedTuple):
  """The jitted functions of one training method.

  Attributes:
    init_extra: `(params, arrays, root) -> TrainState.extra` (None: no extra state).
    step: `(state, arrays, root) -> (state, metrics)`, one training step.
    collect: `(state, arrays, root) -> (state, metrics)`, run before some steps to gather data
      (OWM), or None.
  """

  init_extra: Optional[Callable[..., Any]]
  step: StepFn
  collect: Optional[StepFn]


def teacher_forcing_iteration(model: Any, optimizer: optax.GradientTransformation,
                              windows: Windows, batch_size: int, streams: Streams,
                              readout: Optional[losses.Readout] = None) -> Iteration:
  """The base model's training step on `batch_size` random windows (PAPER.md section 2), with
  an optional read-out term in the loss (`losses.predict_loss`)."""
  train_step = make_train_step(losses.teacher_forcing_loss(model, readout=readout), optimizer)

  def step(state, arrays, root):
    batch = windows.sample(arrays, stream_key(root, streams.data, state.step), batch_size)
    return train_step(state, windows.prepare(batch),
                      stream_key(root, streams.dropout, state.step))

  return Iteration(init_extra=None, step=windows.jit_step(step), collect=None)


def adversarial_iteration(model: Any, optimizer: optax.GradientTransformation, windows: Windows,
                          batch_size: int, streams: Streams,
                          attack: adversarial.AdversarialConfig) -> Iteration:
  """AWM (PAPER.md section 4): teacher forcing on inputs perturbed by one FGSM step with random
  start; the radii (`init_extra`) are fixed from the first minibatch."""
  train_step = make_train_step(adversarial.adversarial_loss(model, attack), optimizer,
                               stateful=True)

  def init_extra(params, arrays, root):
    # Paper (section 4): radii fixed from the first minibatch (or recomputed per batch).
    batch = windows.prepare(windows.sample(arrays, stream_key(root, streams.data, 0), batch_size))
    trainable, frozen = split_params(params)
    return adversarial.init_extra(model, trainable, frozen, batch, attack)

  def step(state, arrays, root):
    batch = windows.sample(arrays, stream_key(root, streams.data, state.step), batch_size)
    return train_step(state, windows.prepare(batch),
                      stream_key(root, streams.dropout, state.step))

  return Iteration(init_extra=windows.jit_init(init_extra), step=windows.jit_step(step),
                   collect=None)


def online_iteration(model: Any, optimizer: optax.GradientTransformation, windows: Windows,
                     streams: Streams, *, stats: Any, planner: Planner, num_offline: int,
                     num_online: int, capacity: int, num_segments: int, goal_horizon: int,
                     objective: str = 'last', rollout: str = 'history', alpha=1.0) -> Iteration:
  """OWM (PAPER.md section 4): each batch is `num_offline` offline windows and `num_online` from
  a replay buffer of `capacity` windows (`TrainState.extra['buffer']`); `collect` plans from
  `num_segments` dataset segments with `planner`, executes the plans in the simulator and adds
  the executed windows (`wmjax.training.online.collect_windows`)."""
  train_step = make_train_step(losses.teacher_forcing_loss(model), optimizer)

  def init_extra(params, arrays, root):
    del params, root  # Unused.
    example = jax.tree.map(lambda x: x[0], windows.sample(arrays, jax.random.key(0), 1))
    return {'buffer': replay.init_buffer(example, capacity)}

  def collect(state, arrays, root):
    # Section 4 (OWM): plan, execute in the simulator, add the executed windows to the buffer.
    found, info = online.collect_windows(
        windows.env, model, full_params(state), stats, arrays,
        stream_key(root, streams.online, state.step), planner=planner,
        num_segments=num_segments, goal_horizon=goal_horizon, num_hist=windows.num_hist,
        frameskip=windows.frameskip, objective=objective, rollout=rollout, alpha=alpha)
    buffer = replay.insert(state.extra['buffer'], found)
    metrics = {'owm/goal_distance': jnp.mean(info['goal_distance']),
               'owm/plan_cost': jnp.mean(info['plan_cost']),
               'owm/buffer_size': buffer.size}
    return state.replace(extra=dict(state.extra, buffer=buffer)), metrics

  def step(state, arrays, root):
    key_off, key_on = jax.random.split(stream_key(root, streams.data, state.step))
    batch = replay.mix_batches(windows.sample(arrays, key_off, num_offline),
                               replay.sample(state.extra['buffer'], key_on, num_online))
    return train_step(state, windows.prepare(batch),
                      stream_key(root, streams.dropout, state.step))

  return Iteration(init_extra=windows.jit_init(init_extra), step=windows.jit_step(step),
                   collect=windows.jit_step(collect))
