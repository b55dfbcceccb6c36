"""PushT's geometry and units (PAPER.md section 5): shared by the simulator and its expert.

px in a 512 x 512 workspace with y pointing DOWN (image rows); the T's local frame has its origin
at the crossbar's top-edge midpoint and maps to the world by `world = position + R(angle) @
local` (see `wmjax.envs.pusht`). Pure JAX and numpy: no simulator is built or imported here.
"""

import jax
import jax.numpy as jnp
import numpy as np

# --- Geometry, px (section 5). ------------------------------------------------------
WORKSPACE = 512.0      # Side of the square workspace.
WALL_LOW, WALL_HIGH = 7.0, 504.0  # Inner faces of gym-pusht's walls (segments at 5 / 506, r 2).
PUSHER_RADIUS = 15.0   # Pusher disk radius.
BAR_HALF = (60.0, 15.0)    # Crossbar half extents (120 x 30).
STEM_HALF = (15.0, 45.0)   # Stem half extents (30 x 90).
# Box centres in the T's local frame (origin: crossbar top-edge midpoint, y down).
BAR_CENTER = (0.0, 15.0)
STEM_CENTER = (0.0, 75.0)
# Centre of rotation in the local frame (gym-pusht: mean of the two boxes' centres).
PIVOT = (0.0, 45.0)
# T outline, local frame, clockwise on screen.
T_VERTICES = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120),
                       (-15, 30), (-60, 30)], np.float32)
ACTION_SCALE = 100.0   # Relative PD target offset per unit action, px (control, section 5).


def wrap_angle(angle: jax.Array) -> jax.Array:
  """Wraps angles to [-pi, pi)."""
  return jnp.mod(angle + jnp.pi, 2 * jnp.pi) - jnp.pi


def to_local(state_vector: jax.Array, points: jax.Array) -> jax.Array:
  """World px points (..., 2) -> the T's local frame (origin at the top-edge midpoint)."""
  c, s = jnp.cos(state_vector[4]), jnp.sin(state_vector[4])
  d = points - state_vector[2:4]
  return jnp.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)


def to_world(state_vector: jax.Array, points: jax.Array) -> jax.Array:
  """Local-frame px points (..., 2) -> world px."""
  c, s = jnp.cos(state_vector[4]), jnp.sin(state_vector[4])
  x, y = points[..., 0], points[..., 1]
  return state_vector[2:4] + jnp.stack([c * x - s * y, s * x + c * y], -1)


def _sdf_box_local(p: jax.Array, center, half) -> jax.Array:
  qx = jnp.abs(p[..., 0] - center[0]) - half[0]
  qy = jnp.abs(p[..., 1] - center[1]) - half[1]
  outside = jnp.sqrt(jnp.maximum(qx, 0.0)**2 + jnp.maximum(qy, 0.0)**2 + 1e-12) - 1e-6
  return outside + jnp.minimum(jnp.maximum(qx, qy), 0.0)


def block_sdf(state_vector: jax.Array, points: jax.Array) -> jax.Array:
  """Signed distance (px, < 0 inside) from world points (..., 2) to the T block."""
  p = to_local(state_vector, points)
  return jnp.minimum(_sdf_box_local(p, BAR_CENTER, BAR_HALF),
                     _sdf_box_local(p, STEM_CENTER, STEM_HALF))


def pusher_gap(state_vector: jax.Array) -> jax.Array:
  """() px between the pusher's rim and the T (<= ~0 means contact)."""
  return block_sdf(state_vector, state_vector[:2]) - PUSHER_RADIUS
