"""Pure-JAX signed-distance rasteriser for top-down 2-D scenes.

Every task draws its observation image from its (S,) state vector with these
helpers, inside `jit`/`vmap`, and the images are differentiable in the state.

Conventions (shared by every task):
  * The world is the square [0, extent]^2. Image row i, column j shows the world
    point (x, y) = ((j + 0.5) * extent / size, (i + 0.5) * extent / size): x grows
    to the right, y grows DOWN the image (row index = y), as in PushT's and
    DotWall's pixel coordinates. Tasks whose world has y up (PointMaze) flip y
    before calling these helpers.
  * A signed distance is < 0 inside a shape, in world units.
  * Images are (size, size, 3) float32 RGB in [0, 1]; masks are (size, size).

The helpers are written as explicit per-pixel scalar x / y arithmetic on a fixed
meshgrid: a generic version on stacked (size, size, 2) coordinates was an order of
magnitude slower on CPU.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Added under square roots so the gradient at a zero distance stays finite.
_EPS = 1e-12


def pixel_centers(size: int, extent: float) -> tuple[jax.Array, jax.Array]:
  """World coordinates of the pixel centres of a square image.

  Args:
    size: image side in pixels (static).
    extent: world side; the image covers [0, extent]^2.

  Returns:
    (xs, ys): each (size, size) float32; xs[i, j] = (j + 0.5) * extent / size,
    ys[i, j] = (i + 0.5) * extent / size (row = y, y down the image).
  """
  if int(size) != size or size <= 0:
    raise ValueError(f'size must be a positive int, got {size!r}.')
  c = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(extent / size)
  ys, xs = np.meshgrid(c, c, indexing='ij')
  return jnp.asarray(xs), jnp.asarray(ys)


def pixel_size(size: int, extent: float) -> float:
  """World units per pixel: the natural `softness` of `coverage`."""
  return float(extent) / float(size)


def sdf_disk(xs: jax.Array, ys: jax.Array, cx: jax.Array, cy: jax.Array,
             r: jax.Array) -> jax.Array:
  """Signed distance to a disk.

  Args:
    xs, ys: (size, size) pixel centres from `pixel_centers`.
    cx, cy: () centre, world units.
    r: () radius, world units.

  Returns:
    (size, size) signed distance, negative inside.
  """
  dx = xs - cx
  dy = ys - cy
  return jnp.sqrt(dx * dx + dy * dy + _EPS) - r


def sdf_box(xs: jax.Array, ys: jax.Array, cx: jax.Array, cy: jax.Array,
            half_w: jax.Array, half_h: jax.Array, angle: jax.Array = 0.0) -> jax.Array:
  """Signed distance to a rotated rectangle.

  Args:
    xs, ys: (size, size) pixel centres.
    cx, cy: () box centre, world units.
    half_w, half_h: () half extents along the box's own x and y axes.
    angle: () rotation in radians: the box's x axis points along
      (cos angle, sin angle) in world coordinates (with y down the image a
      positive angle turns the box clockwise on screen).

  Returns:
    (size, size) signed distance, negative inside (exact outside and inside).
  """
  dx = xs - cx
  dy = ys - cy
  c = jnp.cos(angle)
  s = jnp.sin(angle)
  # Coordinates in the box frame (rotation by -angle).
  lx = c * dx + s * dy
  ly = c * dy - s * dx
  qx = jnp.abs(lx) - half_w
  qy = jnp.abs(ly) - half_h
  ox = jnp.maximum(qx, 0.0)
  oy = jnp.maximum(qy, 0.0)
  outside = jnp.sqrt(ox * ox + oy * oy + _EPS) - jnp.sqrt(_EPS)
  inside = jnp.minimum(jnp.maximum(qx, qy), 0.0)
  return outside + inside


def coverage(sdf: jax.Array, softness: float) -> jax.Array:
  """Soft [0, 1] mask from a signed distance: a clipped linear edge.

  Args:
    sdf: (size, size) signed distance, world units.
    softness: edge width in world units; one pixel (`pixel_size`) gives a ~1 px
      anti-aliased edge. Coverage is 0.5 on the boundary.

  Returns:
    (size, size) float32 in [0, 1].
  """
  return jnp.clip(0.5 - sdf / softness, 0.0, 1.0)


def gaussian_blob(xs: jax.Array, ys: jax.Array, cx: jax.Array, cy: jax.Array,
                  std: jax.Array) -> jax.Array:
  """Unnormalised isotropic Gaussian, 1 at the centre.

  Args:
    xs, ys: (size, size) pixel centres.
    cx, cy: () centre, world units.
    std: () standard deviation, world units.

  Returns:
    (size, size) float32 in (0, 1].
  """
  dx = xs - cx
  dy = ys - cy
  return jnp.exp(-(dx * dx + dy * dy) / (2.0 * std * std))


def composite(background_rgb: jax.Array,
              layers: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
  """Painter's algorithm: layers drawn in order over a background.

  Args:
    background_rgb: (3,) colour or (size, size, 3) image, in [0, 1].
    layers: sequence of (mask (size, size) in [0, 1], rgb (3,) or (size, size, 3)).
      Later layers cover earlier ones.

  Returns:
    (size, size, 3) float32 image.
  """
  if not layers:
    raise ValueError('composite needs at least one (mask, rgb) layer to know the image size.')
  shape = layers[0][0].shape
  img = jnp.broadcast_to(jnp.asarray(background_rgb, jnp.float32), shape + (3,))
  for mask, rgb in layers:
    m = mask[..., None]
    img = img * (1.0 - m) + m * jnp.asarray(rgb, jnp.float32)
  return img


def to_uint8(img: jax.Array) -> jax.Array:
  """Float image in [0, 1] -> uint8 (values outside are clipped). Any shape."""
  return jnp.round(jnp.clip(img, 0.0, 1.0) * 255.0).astype(jnp.uint8)
