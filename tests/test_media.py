"""Media output (wmjax.media): PNGs, GIFs and side-by-side videos."""

import numpy as np
import pytest

from wmjax import media


def test_media_writes_files(tmp_path):
  frames = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
  png = media.save_png(str(tmp_path / 'a.png'), frames[0])
  assert (tmp_path / 'a.png').stat().st_size > 0 and png.endswith('.png')
  gif = media.save_video(str(tmp_path / 'b.gif'), frames, fps=5)
  assert gif.endswith('.gif') and (tmp_path / 'b.gif').exists()
  both = media.side_by_side(frames, frames[:2])
  assert both.shape == (4, 8, 18, 3) and both.dtype == np.uint8
  with pytest.raises(ValueError):
    media.save_video(str(tmp_path / 'c.avi'), frames)
  with pytest.raises(ValueError):
    media.side_by_side(frames, frames[:, :4])
