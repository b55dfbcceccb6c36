"""Data parallelism over devices and hosts: one mesh axis, global batches, replicated state.

One code path serves one device, several devices of one process, and several processes (hosts):

  * a 1-D `Mesh` over all devices (axis 'data', Auto axis type: `jax.make_mesh`'s Explicit axes
    make vmapped `mjx.step` fail);
  * training: parameters and optimiser state replicated, the global batch split along its leading
    axis; XLA's SPMD partitioner all-reduces the gradients (`shard_train_step`);
  * evaluation: independent instances (initial states, goals, keys) split across devices with
    `shard_map`, the env, model and parameters replicated (`shard_map_instances`; MPC
    evaluations: `wmjax.planning.mpc.sharded_evaluation`); results are gathered to host arrays
    on every process.

Global arrays across processes are built with `jax.make_array_from_process_local_data`: each
process passes either its own slice of the batch (`shard_batch`) or, when every process holds
the same full array, the whole of it (`shard_batch(..., global_batch=True)`).

Nothing here sets XLA flags or JAX config; several CPU devices for tests and benchmarks come from
`XLA_FLAGS=--xla_force_host_platform_device_count=N`, set by the program before importing jax.
"""

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[Any] | None = None, axis_name: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh with an Auto-typed axis.

  Args:
    devices: the devices, in order (default: `jax.devices()`, every device of every process).
    axis_name: the mesh axis the batch is split along.

  Returns:
    `Mesh(devices, (axis_name,))`.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError('make_mesh needs at least one device; got an empty list.')
  return Mesh(np.asarray(devices), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,))


def _axis(mesh: Mesh) -> str:
  if len(mesh.axis_names) != 1:
    raise ValueError(f'Expected a 1-D mesh (one data axis); got axes {mesh.axis_names}.')
  return mesh.axis_names[0]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split across the mesh's devices, other axes whole."""
  return NamedSharding(mesh, PartitionSpec(_axis(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def check_divisible(n: int, mesh: Mesh | int, what: str) -> None:
  """Raises ValueError unless `n` (a count named `what`) splits evenly across the devices.

  Args:
    n: the count, e.g. a batch size.
    mesh: a mesh or a device count.
    what: the setting to change, e.g. 'train.batch_size'.
  """
  d = mesh if isinstance(mesh, int) else int(mesh.devices.size)
  if d < 1 or n % d:
    raise ValueError(f'{what}={n} does not divide across the {d} devices; use a multiple of {d} '
                     'or run on fewer devices.')


def _is_key(x: Any) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put(x: Any, sharding: NamedSharding, global_shape: tuple[int, ...] | None) -> jax.Array:
  """One leaf onto a (possibly multi-process) sharding; `global_shape` None: x is this process's
  slice of the leading axis; else x is the whole array (the same on every process)."""
  if _is_key(x):  # Typed keys: move their uint32 data, then wrap it again.
    data = jax.random.key_data(x)
    shape = None if global_shape is None else tuple(global_shape) + data.shape[x.ndim:]
    return jax.random.wrap_key_data(_put(data, sharding, shape), impl=jax.random.key_impl(x))
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if x.sharding == sharding:
      return x
    raise ValueError(f'Cannot re-place an array that spans other processes (sharding '
                     f'{x.sharding}); pass host or process-local arrays.')
  return jax.make_array_from_process_local_data(sharding, np.asarray(x), global_shape)


def shard_batch(batch: Any, mesh: Mesh, *, global_batch: bool = False) -> Any:
  """Global arrays split along the leading axis from process-local data.

  Args:
    batch: a pytree of arrays (host or device), every leaf (B_local, ...) or (B, ...); typed PRNG
      key arrays are allowed.
    mesh: a 1-D mesh (`make_mesh`).
    global_batch: False: each process passes its own slice, B_local = B / process count (the
      usual per-host input pipeline); True: every process passes the same whole batch (B, ...)
      and keeps the part its devices hold. With one process both are the same.

  Returns:
    The pytree of (B, ...) `jax.Array`s with `batch_sharding(mesh)`.

  Raises:
    ValueError: B does not divide across the mesh's devices.
  """
  sharding = batch_sharding(mesh)
  procs = jax.process_count()

  def put(x):
    if np.ndim(x) < 1:
      raise ValueError(f'shard_batch needs arrays with a leading batch axis; got shape '
                       f'{np.shape(x)}.')
    n = x.shape[0] if global_batch or procs == 1 else x.shape[0] * procs
    check_divisible(n, mesh, 'the global batch size (leading axis)')
    return _put(x, sharding, tuple(x.shape) if global_batch else None)

  return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A full copy of every leaf on every device of the mesh (all processes pass the same values).

  Non-array leaves (Python scalars, None) are left alone.
  """
  sharding = replicated(mesh)

  def put(x):
    if not hasattr(x, 'shape'):
      return x
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    return _put(x, sharding, tuple(x.shape))

  return jax.tree.map(put, tree)


def constrain_batch(batch: Any, mesh: Mesh) -> Any:
  """Inside jit: split every leaf whose leading axis divides across the devices (others stay as
  the compiler places them, e.g. a short last evaluation batch). With one device a no-op."""
  d = int(mesh.devices.size)
  sharding = batch_sharding(mesh)

  def constrain(x):
    if d > 1 and np.ndim(x) >= 1 and x.shape[0] % d == 0:
      return jax.lax.with_sharding_constraint(x, sharding)
    return x

  return jax.tree.map(constrain, batch)


def shard_train_step(step_fn: Callable[..., Any], mesh: Mesh, *, donate: bool = True
                     ) -> Callable[..., Any]:
  """Jits `step(state, batch, key) -> (state, metrics)` for data parallelism.

  `state` and `key` are replicated, `batch` (every leaf (B, ...), B divisible by the device
  count) is split along its leading axis; outputs are replicated. The loss is a mean over the
  global batch, so the partitioner inserts the gradient all-reduce: the result equals the
  single-device step on the same global batch up to the order of floating-point sums.

  Args:
    step_fn: e.g. `wmjax.training.make_train_step(loss, optimizer)`.
    mesh: a 1-D mesh.
    donate: donate `state` (argument 0).

  Returns:
    The jitted step. Pass `state` through `replicate` and the batch through `shard_batch` (or
    host arrays, in a single process).
  """
  rep = replicated(mesh)
  return jax.jit(step_fn, in_shardings=(rep, batch_sharding(mesh), rep), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())


def shard_map_instances(fn: Callable[..., Any], mesh: Mesh, *, num_replicated: int = 1
                        ) -> Callable[..., Any]:
  """Jits `fn(*replicated_args, *instance_args)` with the instances split across devices.

  Each device runs `fn` on its N / D instances (no communication): the first `num_replicated`
  arguments (e.g. parameters) are whole on every device, the others and every output have a
  leading instance axis N split along the mesh axis.

  Args:
    fn: a batched function of instances (e.g. `wmjax.planning.mpc.sharded_evaluation`'s).
    mesh: a 1-D mesh.
    num_replicated: how many leading arguments are replicated.

  Returns:
    The jitted function (`.lower(...)` works for timing compilation apart). Its inputs: replicated
    arguments from `replicate`, instance arrays from `shard_batch` (or host arrays in a single
    process); outputs: global arrays split along the instances (`gather` them).
  """
  axis = _axis(mesh)

  def wrapped(*args):
    if len(args) < num_replicated:
      raise ValueError(f'Expected at least {num_replicated} replicated arguments; got '
                       f'{len(args)}.')
    specs = ((PartitionSpec(),) * num_replicated
             + (PartitionSpec(axis),) * (len(args) - num_replicated))
    # check_vma off: planner loops carry values that start replicated and become per-device.
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(axis),
                           check_vma=False)
    return mapped(*args)

  return jax.jit(wrapped)


def gather(tree: Any) -> Any:
  """Host numpy copies of (possibly multi-process) global arrays, the same on every process."""

  def get(x):
    if not isinstance(x, jax.Array):
      return x
    if _is_key(x):
      return x
    if x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(get, tree)

