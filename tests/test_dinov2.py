"""DINOv2 encoder and torch-free weight loading, on a small synthetic checkpoint."""

import collections
import importlib.util
import io
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from wmjax.models import dinov2
from wmjax.models import dinov2_convert

SMALL = dict(image_size=16, resize_to=16, patch_size=4, dim=16, depth=2, num_heads=2, mlp_dim=32,
             pos_grid=4)


def _state_dict(module, seed=0):
  rng = np.random.default_rng(seed)
  state = {k: rng.normal(0, 0.2, s).astype(np.float32)
           for k, s in dinov2_convert.expected_shapes(module).items()}
  state['mask_token'] = np.zeros((1, module.dim), np.float32)
  return state


# ---- A hand-built torch zip checkpoint (no torch needed) ----------------------------------------

class _Global:
  """Pickled as the global `module.name`, as torch's own objects are."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):
    raise AssertionError('never called')


class _Storage:

  def __init__(self, key, array):
    self.key, self.array = key, array


class _Tensor:

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

  def __reduce__(self):
    return _Global('torch._utils', '_rebuild_tensor_v2'), self.args


class _TorchLikePickler(pickle._Pickler):  # pylint: disable=protected-access
  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      return ('storage', _Global('torch', 'FloatStorage'), obj.key, 'cpu', obj.array.size)
    return None

  def _save_global_ref(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())
    self.memoize(obj)

  dispatch[_Global] = _save_global_ref


def write_torch_zip(path, state, share_storage=False):
  """Writes `state` in torch's zip layout: archive/data.pkl + archive/data/<key> + version."""
  entries, storages = collections.OrderedDict(), {}
  if share_storage:  # All tensors as strided views of one storage (offsets, non-contiguous).
    flat = np.concatenate([v.T.ravel() if v.ndim == 2 else v.ravel() for v in state.values()])
    storage = _Storage('0', flat.astype(np.float32))
    storages['0'] = storage
    offset = 0
    for name, v in state.items():
      if v.ndim == 2:  # Stored transposed: a column-major (Fortran-strided) view.
        stride = (1, v.shape[0])
      else:
        stride = tuple(int(np.prod(v.shape[i + 1:])) for i in range(v.ndim))
      entries[name] = _Tensor(storage, offset, v.shape, stride)
      offset += v.size
  else:
    for i, (name, v) in enumerate(state.items()):
      storages[str(i)] = _Storage(str(i), np.ascontiguousarray(v, np.float32))
      stride = tuple(int(np.prod(v.shape[i + 1:])) for i in range(v.ndim))
      entries[name] = _Tensor(storages[str(i)], 0, v.shape, stride)
  buf = io.BytesIO()
  _TorchLikePickler(buf, protocol=2).dump(entries)
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/byteorder', 'little')
    for key, s in storages.items():
      z.writestr(f'archive/data/{key}', s.array.astype('<f4').tobytes())
    z.writestr('archive/version', '3\n')


# ---- An independent numpy forward in the official (torch) layout --------------------------------

def _reference_forward(state, module, pixels):
  x = pixels.astype(np.float64) / 255.0
  x = (x - 0.5) / 0.5
  p, g, d, h = module.patch_size, module.grid, module.dim, module.num_heads
  b = x.shape[0]
  patches = x.reshape(b, g, p, g, p, 3).transpose(0, 1, 3, 5, 2, 4).reshape(b, g * g, 3 * p * p)
  w = state['patch_embed.proj.weight'].reshape(d, -1)
  t = patches @ w.T + state['patch_embed.proj.bias']
  t = np.concatenate([np.broadcast_to(state['cls_token'], (b, 1, d)), t], 1) + state['pos_embed']

  def ln(x, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * state[name + '.weight'] + state[name + '.bias']

  lin = lambda x, name: x @ state[name + '.weight'].T + state[name + '.bias']
  gelu = lambda x: 0.5 * x * (1 + np.vectorize(__import__('math').erf)(x / np.sqrt(2)))
  for i in range(module.depth):
    pre = f'blocks.{i}.'
    qkv = lin(ln(t, pre + 'norm1'), pre + 'attn.qkv').reshape(b, -1, 3, h, d // h)
    q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // h)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    a = (att @ v).transpose(0, 2, 1, 3).reshape(b, -1, d)
    t = t + lin(a, pre + 'attn.proj') * state[pre + 'ls1.gamma']
    m = lin(gelu(lin(ln(t, pre + 'norm2'), pre + 'mlp.fc1')), pre + 'mlp.fc2')
    t = t + m * state[pre + 'ls2.gamma']
  return ln(t, 'norm')[:, 1:]


@pytest.fixture(name='module')
def fixture_module():
  return dinov2.Dinov2(**SMALL)


def test_safetensors_load_and_forward_matches_reference(module, tmp_path):
  state = _state_dict(module)
  path = str(tmp_path / 'w.safetensors')
  safetensors.numpy.save_file(state, path)
  params = dinov2_convert.load_dinov2_weights(path, module)
  pixels = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  out = module.apply({'params': params}, pixels)
  assert out.shape == (2, 16, 16)
  np.testing.assert_allclose(out, _reference_forward(state, module, pixels), atol=2e-4)
  # Params tree equals the module's own init structure.
  want = jax.tree.map(jnp.shape, module.init(jax.random.key(0), pixels)['params'])
  assert jax.tree.map(np.shape, params) == want


@pytest.mark.parametrize('share_storage', [False, True])
def test_torch_zip_load_matches_safetensors(module, tmp_path, share_storage):
  state = _state_dict(module, seed=3)
  pth = str(tmp_path / 'w.pth')
  write_torch_zip(pth, state, share_storage=share_storage)
  raw = dinov2_convert.read_torch_state_dict(pth)
  assert set(raw) == set(state)
  for k, v in state.items():
    np.testing.assert_array_equal(raw[k], v, err_msg=k)
  params = dinov2_convert.load_dinov2_weights(pth, module)
  st = str(tmp_path / 'w.safetensors')
  safetensors.numpy.save_file(state, st)
  jax.tree.map(np.testing.assert_array_equal, params, dinov2_convert.load_dinov2_weights(st, module))


def test_forward_shapes_resize_and_pos_interpolation():
  # 28 px input resized to 24 -> 6 x 6 grid, positional embedding learned for 4 x 4.
  module = dinov2.Dinov2(**dict(SMALL, image_size=28, resize_to=24))
  pixels = jnp.zeros((3, 2, 28, 28, 3), jnp.uint8)
  params = module.init(jax.random.key(0), pixels)['params']
  assert params['pos_embed'].shape == (1, 17, 16)
  out = module.apply({'params': params}, pixels)
  assert out.shape == (3, 2, 36, 16)
  assert np.all(np.isfinite(out))


def test_bicubic_matrix_matches_torch_cubic_weights():
  m = dinov2.bicubic_matrix(37, 14, 14.1 / 37)
  assert m.shape == (14, 37)
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
  np.testing.assert_allclose(dinov2.bicubic_matrix(5, 5, 1.0), np.eye(5), atol=1e-7)
  # 2x upsampling: output 3 samples source 1.25 -> taps 0..3 with Keys a = -0.75 weights at t = 0.25.
  up = dinov2.bicubic_matrix(8, 16, 2.0)
  np.testing.assert_allclose(up[3, :4], [-0.10546875, 0.87890625, 0.26171875, -0.03515625],
                             atol=1e-7)
  # Output 0 samples source -0.25: taps -2..1 clamp onto pixels 0 and 1.
  w = dinov2._cubic(np.array(0.75))  # pylint: disable=protected-access
  np.testing.assert_allclose(up[0, :2], [w[0] + w[1] + w[2], w[3]], atol=1e-7)


def test_missing_unexpected_and_misshaped_tensors_are_named(module, tmp_path):
  state = _state_dict(module)
  del state['blocks.1.ls2.gamma']
  state['blocks.0.attn.qkv.weight'] = np.zeros((47, 16), np.float32)
  state['register_tokens'] = np.zeros((1, 4, 16), np.float32)
  path = str(tmp_path / 'bad.safetensors')
  safetensors.numpy.save_file(state, path)
  with pytest.raises(ValueError) as e:
    dinov2_convert.load_dinov2_weights(path, module)
  msg = str(e.value)
  assert 'missing blocks.1.ls2.gamma' in msg
  assert 'blocks.0.attn.qkv.weight: expected shape (48, 16), found (47, 16)' in msg
  assert 'unexpected register_tokens' in msg


def test_default_config_rejects_small_checkpoint(module, tmp_path):
  path = str(tmp_path / 'w.safetensors')
  safetensors.numpy.save_file(_state_dict(module), path)
  with pytest.raises(ValueError, match='pos_embed: expected shape .1, 1370, 384.'):
    dinov2_convert.load_dinov2_weights(path)


def test_bad_files(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    dinov2_convert.load_dinov2_weights(str(tmp_path / 'nope.pth'))
  legacy = tmp_path / 'legacy.pth'
  legacy.write_bytes(pickle.dumps({'a': 1}))
  with pytest.raises(ValueError, match='not a torch zip'):
    dinov2_convert.load_dinov2_weights(str(legacy))
  other = tmp_path / 'w.npz'
  other.write_bytes(b'')
  with pytest.raises(ValueError, match='Unknown weights format'):
    dinov2_convert.load_dinov2_weights(str(other))


def test_unpickler_refuses_foreign_globals(tmp_path):
  path = str(tmp_path / 'evil.pth')
  buf = io.BytesIO()
  _TorchLikePickler(buf, protocol=2).dump({'x': _Global('os', 'system')})
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', buf.getvalue())
  with pytest.raises(pickle.UnpicklingError, match='Refusing to unpickle global os.system'):
    dinov2_convert.read_torch_state_dict(path)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch not installed')
def test_real_torch_save_file(module, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  state = _state_dict(module)
  path = str(tmp_path / 'torch.pth')
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
  raw = dinov2_convert.read_torch_state_dict(path)
  for k, v in state.items():
    np.testing.assert_array_equal(raw[k], v, err_msg=k)
