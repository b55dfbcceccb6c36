"""What a measurement ran on: printed beside every benchmark and stored with every result."""

import os
import platform
from typing import Any

import jax


def machine_info() -> dict[str, Any]:
  """Platform, CPU, JAX version, backend, devices and the default matmul precision."""
  cpu = platform.processor() or '?'
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  devices = jax.devices()
  return {
      'platform': platform.platform(), 'python': platform.python_version(), 'cpu': cpu,
      'cpu_count': os.cpu_count(), 'jax': jax.__version__, 'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind, 'device_count': len(devices),
      'jax_default_matmul_precision': str(jax.config.jax_default_matmul_precision),
  }


def describe(info: dict[str, Any] | None = None) -> list[str]:
  """Two printable lines of `machine_info()` (or of a stored `info`) for benchmark output."""
  m = machine_info() if info is None else info
  return [f'machine: {m["platform"]}, python {m["python"]}, cpu {m["cpu"]} '
          f'({m["cpu_count"]} logical cores)',
          f'jax {m["jax"]}, backend {m["backend"]}, {m["device_count"]} x {m["device_kind"]}, '
          f'jax_default_matmul_precision: {m["jax_default_matmul_precision"]}']
