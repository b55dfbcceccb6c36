"""Multi-process (multi-host) start-up: `jax.distributed.initialize` from three settings.

Every process of a job runs the same binary with the same arguments plus its own process id:

  python experiments/train_world_model.py ... --coordinator_address=10.0.0.1:1234 \
      --num_processes=2 --process_id=0        # and --process_id=1 on the other host

On clusters JAX can read (SLURM, Open MPI, TPU pods, Kubernetes JobSets) pass
`--coordinator_address=auto` and nothing else. With no flags the process runs alone (no-op).

`initialize` must run before anything starts a JAX backend (any computation, `jax.devices()`,
creating an array). On CPU the collectives across processes use gloo: the option
`jax_cpu_collectives_implementation` is read when the CPU backend starts, so it is set here,
before `jax.distributed.initialize` (harmless on GPU/TPU hosts, where it only concerns the CPU
backend).
"""

from typing import Any

import jax

AUTO = 'auto'  # --coordinator_address value: let JAX detect the cluster.


def check_settings(coordinator_address: str | None, num_processes: int | None,
                   process_id: int | None) -> None:
  """Raises ValueError naming a contradictory or incomplete combination."""
  if coordinator_address == AUTO:
    if num_processes is not None and num_processes < 1:
      raise ValueError(f'num_processes must be >= 1; got {num_processes}.')
    return
  if coordinator_address is None:
    if num_processes is not None or process_id is not None:
      raise ValueError(
          f'num_processes={num_processes} / process_id={process_id} given without '
          'coordinator_address: give the coordinator as host:port (the same on every process), '
          f'or coordinator_address={AUTO!r} on a cluster JAX detects.')
    return
  if ':' not in coordinator_address:
    raise ValueError(f'coordinator_address={coordinator_address!r} must be host:port (e.g. '
                     f'10.0.0.1:1234) or {AUTO!r}.')
  if num_processes is None or process_id is None:
    raise ValueError(f'coordinator_address={coordinator_address!r} needs num_processes (the '
                     f'job size; got {num_processes}) and process_id (0 .. num_processes - 1; '
                     f'got {process_id}).')
  if num_processes < 1:
    raise ValueError(f'num_processes must be >= 1; got {num_processes}.')
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id={process_id} must be in [0, num_processes={num_processes}).')


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, cpu_collectives: str = 'gloo') -> bool:
  """Joins this process to a multi-process JAX job (before any JAX computation).

  Args:
    coordinator_address: 'host:port' of process 0's coordinator service, the same on every
      process; 'auto' to let JAX detect the cluster (then num_processes / process_id are
      optional overrides); None with the other two None: a single process, nothing to do.
    num_processes: how many processes form the job.
    process_id: this process's index, 0 .. num_processes - 1 (process 0 writes the outputs).
    cpu_collectives: CPU collectives implementation across processes ('gloo' or 'mpi').

  Returns:
    True if `jax.distributed.initialize` ran (now or before), False for a lone process.

  Raises:
    ValueError: an incomplete or contradictory combination (checked before anything starts).
  """
  check_settings(coordinator_address, num_processes, process_id)
  if coordinator_address is None:
    return False
  if jax.distributed.is_initialized():
    return True
  jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  if coordinator_address == AUTO:
    jax.distributed.initialize(num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  return True


def is_primary() -> bool:
  """Whether this is process 0 (the one that writes metrics, results and logs)."""
  return jax.process_index() == 0


def define_flags() -> tuple[Any, Any, Any]:
  """absl flags --coordinator_address, --num_processes, --process_id (call under __main__ only).

  Returns:
    The three flag holders; pass their `.value`s to `initialize`.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  address = flags.DEFINE_string(
      'coordinator_address', None,
      "Multi-process jobs: host:port of process 0's coordinator (the same on every process), or "
      f"'{AUTO}' on a cluster JAX detects (SLURM, Open MPI, TPU). Unset: one process.")
  count = flags.DEFINE_integer('num_processes', None,
                               'Multi-process jobs: number of processes (with host:port).')
  index = flags.DEFINE_integer('process_id', None,
                               'Multi-process jobs: this process, 0 .. num_processes - 1.')
  return address, count, index


def initialize_from_flags(holders: tuple[Any, Any, Any]) -> bool:
  """`initialize` from the holders `define_flags` returned (after absl parsed the flags)."""
  address, count, index = holders
  return initialize(address.value, count.value, index.value)
