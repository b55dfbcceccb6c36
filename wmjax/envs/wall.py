"""Wall: a dot in a square world split by a wall with one door (DINO-WM DotWall).

Paper section 5. The reference task is kinematic, not physical: next = pos + 2 a, and
a move that would cross the wall or a border stops where it meets it. There is no
mass, velocity or contact force to simulate, so the task is written in pure JAX (a
physics engine would only add cost and approximate the rule). The step is
differentiable almost everywhere (while blocked, only along the face it hit).

Geometry (world units = pixels of the reference 65 x 65 image, y down):
  * the dot moves in the box [4, 60]^2 (border walls at 4 and 60);
  * the wall fills x in [29, 35] except the door, y in [26, 34];
  * the dot is a point for collisions; a blocked move ends half a pixel back from the face
    it hit and half a pixel along it (DINO-WM's `check_wall_intersect`, see `move`), so a
    dot pushed into a wall creeps along it.

Two behaviours of the reference code are deliberately not reproduced, both from a 0/0
line fit: a purely vertical move into a border returned NaN there, and a purely vertical
move inside the door column could enter the wall above or below the door. Here those moves
stop at their true crossing point with the same offsets.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wmjax.envs import base
from wmjax.envs import render as rd

# Geometry of the reference DotWall (paper section 5).
WORLD = 65.0           # World side; the reference image is 65 x 65 px.
LOW, HIGH = 4.0, 60.0  # Border walls.
WALL_X0, WALL_X1 = 29.0, 35.0  # Wall centred at x = 32, width 6.
WALL_X = 32.0          # Wall centre: which side the dot is on.
DOOR_Y0, DOOR_Y1 = 26.0, 34.0  # Door band.
STEP_SCALE = 2.0       # next = pos + 2 a.
DOT_STD = 1.7          # Gaussian dot, world units.
SUCCESS_RADIUS = 4.5   # Success: distance < 4.5.
# A blocked move ends this far back from the face and along it; a clamped one this far off
# the room's walls (reference `check_wall_intersect`).
_OFFSET, _MARGIN = 0.5, 0.3
# Sampling margin from borders / wall (reference: border + 2 * dot std).
_PAD = 2.0 * DOT_STD

_DOT_RGB = (1.0, 0.0, 0.0)
_WALL_RGB = (0.0, 0.0, 0.0)
_BACKGROUND_RGB = (1.0, 1.0, 1.0)


def _safe_div(num, den):
  """num / den, +inf where den == 0 (finite gradients)."""
  ok = den != 0.0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), jnp.inf)


def inside_wall(pos: jax.Array) -> jax.Array:
  """() bool: `pos` (2,) is strictly inside the wall (outside the door band)."""
  x, y = pos[0], pos[1]
  in_column = (x > WALL_X0) & (x < WALL_X1)
  return in_column & ((y < DOOR_Y0) | (y > DOOR_Y1))


def move(pos: jax.Array, action: jax.Array, clip: bool = False) -> jax.Array:
  """One DotWall transition, with the reference's collision rule (paper section 5).

  next = pos + 2 a, unless the segment pos -> pos + 2 a meets a wall. The rule is DINO-WM's
  `check_wall_intersect` (env/wall/envs/utils.py), including its offsets:
    * crossing the door's floor or ceiling inside the wall's x range (checked first): the
      crossing point + (0.5, -/+0.5), i.e. half a pixel back into the door band;
    * else the first crossing with the x face of the wall (outside the door) or of a border
      on the dot's side of the wall, or with the top or bottom border (the nearer to `pos`
      when both): the crossing point + 0.5 px back from the face + 0.5 px along it (+y on
      x faces, +x on y faces), clamped into the room and kept 0.3 px off its walls.
  So a dot pushed into a wall creeps +0.5 px along it per blocked step, as in the reference.

  Where the reference's line fits divide by zero (purely vertical or horizontal moves) it
  returns NaN or lets the dot into the wall; here those moves use the true crossing point
  (see the module docstring). The result is kept inside the box and out of the wall.

  Args:
    pos: (2,) current position, inside the free space.
    action: (2,) raw action; executed as given (the reference moves 2 a for any a), or
      clipped to [-1, 1] first when `clip`.
    clip: static; clip the action to [-1, 1].

  Returns:
    (2,) next position.
  """
  a = jnp.clip(action, -1.0, 1.0) if clip else action
  d = STEP_SCALE * a
  q = pos + d
  px, py, qx, qy, dx, dy = pos[0], pos[1], q[0], q[1], d[0], d[1]
  dtype = pos.dtype
  half = jnp.asarray(_OFFSET, dtype)

  def y_at(c):  # y where the line through pos and q meets x = c.
    return py + _safe_div((c - px) * dy, dx)

  def x_at(c):  # x where it meets y = c.
    return px + _safe_div((c - py) * dx, dy)

  def crosses(p, r, c):  # pos and q on opposite sides of (or touching) the line at c.
    return (jnp.sign(p - c) * jnp.sign(r - c) <= 0.0) & (p != r)

  # 1. The door's floor (y = DOOR_Y0) and ceiling (y = DOOR_Y1) inside the wall's x range.
  x_hi, x_lo = x_at(DOOR_Y1), x_at(DOOR_Y0)
  in_column = lambda x: (x >= WALL_X0) & (x <= WALL_X1)
  ceiling = (dy > 0) & (qy > DOOR_Y1) & (py < DOOR_Y1) & in_column(x_hi)
  floor = (dy < 0) & (qy < DOOR_Y0) & (py > DOOR_Y0) & in_column(x_lo)
  door_point = jnp.where(ceiling, jnp.stack([x_hi + half, DOOR_Y1 - half]),
                         jnp.stack([x_lo + half, DOOR_Y0 + half]))

  # 2. x faces on the dot's side of the wall (the wall's face has the door), then y borders.
  left_room = WALL_X > px
  x_min = jnp.where(left_room, LOW, WALL_X1)
  x_max = jnp.where(left_room, WALL_X0, HIGH)
  outside_door = lambda y: (y < DOOR_Y0) | (y > DOOR_Y1)
  hit_min = crosses(px, qx, x_min) & (left_room | outside_door(y_at(x_min)))
  hit_max = crosses(px, qx, x_max) & (~left_room | outside_door(y_at(x_max)))
  x_face = jnp.where(hit_min, x_min, x_max)
  v_hit = hit_min | hit_max
  v_point = jnp.stack([x_face, y_at(x_face)])
  v_noisy = v_point + jnp.stack([half * jnp.sign(px - x_face), half])
  hit_low = crosses(py, qy, LOW)
  h_hit = hit_low | crosses(py, qy, HIGH)
  y_face = jnp.where(hit_low, LOW, HIGH)
  h_point = jnp.stack([x_at(y_face), y_face])
  h_noisy = h_point + jnp.stack([half, half * jnp.sign(py - y_face)])
  use_v = v_hit & (~h_hit | (jnp.linalg.norm(pos - v_point) < jnp.linalg.norm(pos - h_point)))
  wall_point = jnp.where(use_v, v_noisy, h_noisy)
  x = jnp.clip(wall_point[0], x_min, x_max)
  y = jnp.clip(wall_point[1], LOW, HIGH)
  x = jnp.where(x <= x_min, x_min + _MARGIN, jnp.where(x >= x_max, x_max - _MARGIN, x))
  y = jnp.where(y <= LOW, LOW + _MARGIN, jnp.where(y >= HIGH, HIGH - _MARGIN, y))
  wall_point = jnp.stack([x, y]).astype(dtype)

  nxt = jnp.where(ceiling | floor, door_point, jnp.where(v_hit | h_hit, wall_point, q))
  # Guards for moves longer than the room (the reference only tests the faces on the dot's
  # side): never leave the box, never enter the wall.
  nxt = jnp.clip(nxt, LOW, HIGH)
  return jnp.where(inside_wall(nxt), pos, nxt)


def move_numpy(pos: np.ndarray, action: np.ndarray, clip: bool = False) -> np.ndarray:
  """`move` for one instance in NumPy, written branch by branch in the order of the
  reference's `check_wall_intersect` (the oracle of the tests and the baseline of
  benchmarks/envs.py). Same deviations and guards as `move`."""
  pos = np.asarray(pos, np.float64)
  a = np.clip(action, -1.0, 1.0) if clip else np.asarray(action, np.float64)
  q = pos + STEP_SCALE * a
  (px, py), (qx, qy) = pos, q
  dx, dy = q - pos

  def x_at(c):
    return px + (c - py) * dx / dy

  def y_at(c):
    return py + (c - px) * dy / dx

  # The door's ceiling, then its floor, inside the wall's x range.
  if dy > 0 and qy > DOOR_Y1 and py < DOOR_Y1 and WALL_X0 <= x_at(DOOR_Y1) <= WALL_X1:
    return _guard(pos, np.array([x_at(DOOR_Y1) + _OFFSET, DOOR_Y1 - _OFFSET]))
  if dy < 0 and qy < DOOR_Y0 and py > DOOR_Y0 and WALL_X0 <= x_at(DOOR_Y0) <= WALL_X1:
    return _guard(pos, np.array([x_at(DOOR_Y0) + _OFFSET, DOOR_Y0 + _OFFSET]))
  if WALL_X > px:
    faces = [(LOW, False), (WALL_X0, True)]
  else:
    faces = [(WALL_X1, True), (HIGH, False)]
  x_min, x_max = faces[0][0], faces[1][0]
  vertical = horizontal = None
  for c, door in faces:
    if dx != 0 and np.sign(px - c) * np.sign(qx - c) <= 0:
      y = y_at(c)
      if not door or y < DOOR_Y0 or y > DOOR_Y1:
        vertical = np.array([c, y])
        break
  for c in (LOW, HIGH):
    if dy != 0 and np.sign(py - c) * np.sign(qy - c) <= 0:
      horizontal = np.array([x_at(c), c])
      break
  if vertical is not None and (horizontal is None or
                               np.linalg.norm(pos - vertical) < np.linalg.norm(pos - horizontal)):
    point = vertical + [_OFFSET * np.sign(px - vertical[0]), _OFFSET]
  elif horizontal is not None:
    point = horizontal + [_OFFSET, _OFFSET * np.sign(py - horizontal[1])]
  else:
    return _guard(pos, q)
  x = float(np.clip(point[0], x_min, x_max))
  y = float(np.clip(point[1], LOW, HIGH))
  x = x_min + _MARGIN if x <= x_min else (x_max - _MARGIN if x >= x_max else x)
  y = LOW + _MARGIN if y <= LOW else (HIGH - _MARGIN if y >= HIGH else y)
  return _guard(pos, np.array([x, y]))


def _guard(pos: np.ndarray, nxt: np.ndarray) -> np.ndarray:
  """`move`'s guards for moves longer than the room, on one instance."""
  nxt = np.clip(nxt, LOW, HIGH)
  x, y = nxt
  return pos if WALL_X0 < x < WALL_X1 and (y < DOOR_Y0 or y > DOOR_Y1) else nxt


@functools.lru_cache(maxsize=16)
def _static_layer(size: int) -> np.ndarray:
  """(size, size) coverage of the borders and the wall: a constant per image size."""
  with jax.ensure_compile_time_eval():
    xs, ys = _grid(size)
    soft = rd.pixel_size(size, WORLD)
    # The reference draws 1 px lines on the borders and pixels 29..35 of the wall,
    # door pixels 26..34 open: boxes grown by half a pixel of the 65 px image.
    sdfs = [
        rd.sdf_box(xs, ys, LOW, WORLD / 2, 0.5, WORLD, 0.0),
        rd.sdf_box(xs, ys, HIGH, WORLD / 2, 0.5, WORLD, 0.0),
        rd.sdf_box(xs, ys, WORLD / 2, LOW, WORLD, 0.5, 0.0),
        rd.sdf_box(xs, ys, WORLD / 2, HIGH, WORLD, 0.5, 0.0),
    ]
    wall_cx = (WALL_X0 + WALL_X1) / 2
    wall_hw = (WALL_X1 - WALL_X0) / 2 + 0.5
    low_h = (DOOR_Y0 - 0.5 - (-WORLD)) / 2
    high_h = (2 * WORLD - (DOOR_Y1 + 0.5)) / 2
    sdfs.append(rd.sdf_box(xs, ys, wall_cx, -WORLD + low_h, wall_hw, low_h, 0.0))
    sdfs.append(rd.sdf_box(xs, ys, wall_cx, DOOR_Y1 + 0.5 + high_h, wall_hw, high_h, 0.0))
    sdf = functools.reduce(jnp.minimum, sdfs)
    return np.asarray(rd.coverage(sdf, soft))


def _grid(size: int) -> tuple[jax.Array, jax.Array]:
  # World point k sits at the centre of pixel k of the 65 px reference image.
  xs, ys = rd.pixel_centers(size, WORLD)
  return xs - 0.5, ys - 0.5


class Wall(base.Env):
  """DotWall (paper section 5): S = 2 (x, y), P = 2 (x, y), A = 2 (nominally [-1, 1]).

  Args:
    clip_actions: clip raw actions to [-1, 1] before the move. Off by default: DINO-WM's
      DotWall moves the dot by 2 a for any a (a = (3, 0) moves 6 px), and the paper's
      unbounded gradient planner is executed as planned.
  """

  name = 'wall'
  state_size = 2
  proprio_size = 2
  action_size = 2
  dt = 1.0  # One kinematic move per env step; no physical time.

  def __init__(self, clip_actions: bool = False):
    self.clip_actions = bool(clip_actions)

  def _state(self, pos: jax.Array) -> base.State:
    pos = jnp.asarray(pos, jnp.float32)
    return base.State(
        data=pos,
        obs={'state': pos, 'proprio': pos},
        reward=jnp.zeros((), jnp.float32),
        done=jnp.zeros((), jnp.float32),
        metrics={},
        info={},
    )

  def _sample_room(self, key: jax.Array, right: jax.Array) -> jax.Array:
    """(2,) uniform position in the left (right=False) or right room, padded."""
    kx, ky = jax.random.split(key)
    x_lo = jnp.where(right, WALL_X1 + _PAD, LOW + _PAD)
    x_hi = jnp.where(right, HIGH - _PAD, WALL_X0 - _PAD)
    x = jax.random.uniform(kx, (), minval=x_lo, maxval=x_hi)
    y = jax.random.uniform(ky, (), minval=LOW + _PAD, maxval=HIGH - _PAD)
    return jnp.stack([x, y])

  def reset(self, key: jax.Array) -> base.State:
    """Uniform position in a random room (behaviour-data start)."""
    k_side, k_pos = jax.random.split(key)
    return self._state(self._sample_room(k_pos, jax.random.bernoulli(k_side)))

  def reset_to(self, state_vector: jax.Array) -> base.State:
    if state_vector.shape != (self.state_size,):
      raise ValueError(f'wall: state vector must have shape (2,), got {state_vector.shape}.')
    return self._state(state_vector)

  def step(self, state: base.State, action: jax.Array) -> base.State:
    self.check_action(action)
    return self._state(move(state.data, action, self.clip_actions))

  def state_vector(self, state: base.State) -> jax.Array:
    return state.data

  def proprio(self, state: base.State) -> jax.Array:
    return state.data

  def render(self, state_vector: jax.Array, size: int = 64) -> jax.Array:
    """(size, size, 3) float32: white, red Gaussian dot (std 1.7), black walls."""
    xs, ys = _grid(size)
    dot = rd.gaussian_blob(xs, ys, state_vector[0], state_vector[1], DOT_STD)
    walls = jnp.asarray(_static_layer(size))
    # The reference paints the walls over the dot.
    return rd.composite(jnp.asarray(_BACKGROUND_RGB),
                        [(dot, jnp.asarray(_DOT_RGB)), (walls, jnp.asarray(_WALL_RGB))])

  def distance(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    return jnp.linalg.norm(state_vector[:2] - goal[:2])

  def success(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    return self.distance(state_vector, goal) < SUCCESS_RADIUS

  def sample_problem(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Start uniform in one room, goal uniform in the other; random side."""
    k_side, k_start, k_goal = jax.random.split(key, 3)
    start_right = jax.random.bernoulli(k_side)
    return (self._sample_room(k_start, start_right),
            self._sample_room(k_goal, jnp.logical_not(start_right)))

  @property
  def action_low(self) -> jax.Array:
    return -jnp.ones((2,), jnp.float32)

  @property
  def action_high(self) -> jax.Array:
    return jnp.ones((2,), jnp.float32)

  @property
  def action_std(self) -> jax.Array:
    """Std of uniform [-1, 1] actions, 1 / sqrt(3)."""
    return jnp.full((2,), 1.0 / np.sqrt(3.0), jnp.float32)
