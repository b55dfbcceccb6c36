"""Writing rendered tasks to image and video files for people to look at (host side).

MP4 needs an ffmpeg binary (mediapy finds one on PATH or via imageio-ffmpeg); without
one `save_video` writes a GIF next to the requested path and returns that path.
"""

import os
import shutil

import numpy as np


def _as_uint8(img) -> np.ndarray:
  arr = np.asarray(img)
  if arr.dtype == np.uint8:
    return arr
  if np.issubdtype(arr.dtype, np.floating):
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
  raise ValueError(f'images must be uint8 or float in [0, 1], got dtype {arr.dtype}.')


def _check_frames(frames, name: str = 'frames') -> np.ndarray:
  arr = _as_uint8(frames)
  if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
    raise ValueError(f'{name} must have shape (T, H, W, 3), got {arr.shape}.')
  return arr


def _makedirs_for(path: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)


def save_png(path: str, img) -> str:
  """Writes one image (H, W, 3) uint8 or float in [0, 1] to `path`; returns `path`."""
  arr = _as_uint8(img)
  if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
    raise ValueError(f'img must have shape (H, W, 3), got {arr.shape}.')
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  _makedirs_for(path)
  iio.imwrite(path, arr)
  return path


def _ffmpeg_available() -> bool:
  if shutil.which('ffmpeg'):
    return True
  try:
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def save_video(path: str, frames, fps: float = 10.0) -> str:
  """Writes frames (T, H, W, 3) as a video chosen by extension (.mp4 or .gif).

  Args:
    path: output file; '.mp4' (needs ffmpeg, else a '.gif' is written instead) or '.gif'.
    frames: (T, H, W, 3) uint8 or float in [0, 1].
    fps: frames per second.

  Returns:
    The path actually written.
  """
  arr = _check_frames(frames)
  ext = os.path.splitext(path)[1].lower()
  if ext not in ('.mp4', '.gif'):
    raise ValueError(f'save_video: unsupported extension {ext!r}; use .mp4 or .gif.')
  _makedirs_for(path)
  if ext == '.mp4' and _ffmpeg_available():
    import mediapy  # pylint: disable=g-import-not-at-top
    # H.264 wants even sides: pad by one pixel where needed.
    t, h, w, c = arr.shape
    padded = np.zeros((t, h + h % 2, w + w % 2, c), np.uint8)
    padded[:, :h, :w] = arr
    mediapy.write_video(path, padded, fps=fps)
    return path
  if ext == '.mp4':
    path = os.path.splitext(path)[0] + '.gif'
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  iio.imwrite(path, arr, extension='.gif', duration=1000.0 / fps, loop=0)
  return path


def side_by_side(frames_a, frames_b, gap: int = 2, gap_value: int = 255) -> np.ndarray:
  """Two videos next to each other, e.g. planned (left) vs executed (right).

  Args:
    frames_a: (Ta, H, W, 3) uint8 or float in [0, 1].
    frames_b: (Tb, H, W, 3), same H and W.
    gap: separating columns in pixels.
    gap_value: uint8 value of the separator.

  Returns:
    (max(Ta, Tb), H, 2 W + gap, 3) uint8; the shorter video holds its last frame.
  """
  a = _check_frames(frames_a, 'frames_a')
  b = _check_frames(frames_b, 'frames_b')
  if a.shape[1:] != b.shape[1:]:
    raise ValueError(f'frame shapes differ: {a.shape[1:]} vs {b.shape[1:]}.')
  t = max(a.shape[0], b.shape[0])
  pad = lambda x: np.concatenate([x, np.repeat(x[-1:], t - x.shape[0], axis=0)], axis=0)
  a, b = pad(a), pad(b)
  sep = np.full(a.shape[:2] + (gap,) + a.shape[3:], gap_value, np.uint8)
  return np.concatenate([a, sep, b], axis=2)
