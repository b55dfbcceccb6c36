"""Loads official DINOv2 weights into the Flax `Dinov2` parameter tree, without torch.

Accepted files:
  * `.safetensors` with the official parameter names (read with safetensors.numpy);
  * the official PyTorch `.pth` (e.g. dinov2_vits14_pretrain.pth), read by a restricted unpickler.

The torch (>= 1.6) zip serialisation layout that `read_torch_state_dict` reads:
  <archive>/data.pkl     a pickle (protocol 2) of the state dict (a dict/OrderedDict name -> tensor);
                         each tensor is pickled as
                         `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                         requires_grad, backward_hooks[, metadata])`, where `storage` is a persistent
                         id `('storage', torch.<Type>Storage, key, location, numel)`;
  <archive>/data/<key>   the raw little-endian bytes of storage `key` (numel elements of the
                         storage type's dtype); tensors view it at `storage_offset` with `stride`
                         (both in elements);
  <archive>/version      the format version (e.g. '3'); <archive>/byteorder 'little' (optional).
<archive> is any single top-level folder name (torch uses the file's stem or 'archive').
Only the globals needed for that (tensor/parameter rebuild functions, storage types,
collections.OrderedDict) are allowed; anything else raises instead of running code.

Official names (ViT-S/14 shapes): cls_token (1, 1, 384), pos_embed (1, 1370, 384),
patch_embed.proj.weight (384, 3, 14, 14), patch_embed.proj.bias (384,), blocks.{i}.norm1.weight/bias,
blocks.{i}.attn.qkv.weight (1152, 384)/bias, blocks.{i}.attn.proj.weight (384, 384)/bias,
blocks.{i}.ls1.gamma (384,), blocks.{i}.norm2.weight/bias, blocks.{i}.mlp.fc1.weight (1536, 384)/bias,
blocks.{i}.mlp.fc2.weight (384, 1536)/bias, blocks.{i}.ls2.gamma, norm.weight/bias; mask_token
(1, 384) is accepted and ignored; register tokens are not supported. Nothing here downloads weights.
"""

import collections
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from wmjax.models import dinov2 as dinov2_lib

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}
OPTIONAL_KEYS = ('mask_token',)


class _StorageType:
  """Stands for `torch.<Name>Storage` inside the pickle."""

  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata  # Unused.
  size, stride = tuple(size), tuple(stride)
  if not size:
    return storage[storage_offset].copy()
  needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if min(size) > 0 and needed > storage.size:
    raise ValueError(f'Tensor view (offset {storage_offset}, size {size}, stride {stride}) '
                     f'exceeds its storage of {storage.size} elements.')
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size,
      strides=tuple(s * storage.itemsize for s in stride), writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks  # Unused.
  return data


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a torch state dict into numpy arrays, refusing every other global."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._storages = {}

  def find_class(self, module, name):
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return _rebuild_tensor_v2
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    raise pickle.UnpicklingError(
        f'Refusing to unpickle global {module}.{name}: only tensors, storages and OrderedDict '
        'are allowed in a weights file.')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'Unsupported persistent id {pid!r}.')
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f'Unsupported storage type {storage_type!r}.')
    if key not in self._storages:
      raw = self._archive.read(f'{self._prefix}data/{key}')
      self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder('<'))
    return self._storages[key]


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a torch zip-format `.pth` state dict into {name: numpy array}; torch is not needed."""
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path} is not a torch zip checkpoint (legacy pre-1.6 torch files are not '
                     'supported; re-save them or convert to .safetensors).')
  with zipfile.ZipFile(path) as archive:
    pkls = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pkls) != 1:
      raise ValueError(f'{path}: expected exactly one <archive>/data.pkl, found {pkls}.')
    prefix = pkls[0][:-len('data.pkl')]
    if f'{prefix}byteorder' in archive.namelist():
      order = archive.read(f'{prefix}byteorder').decode().strip()
      if order != 'little':
        raise ValueError(f'{path}: byteorder {order!r} is not supported (only little).')
    with archive.open(pkls[0]) as f:
      state = _RestrictedUnpickler(f, archive, prefix).load()
  for wrapper in ('state_dict', 'model'):
    if isinstance(state, Mapping) and set(state) == {wrapper}:
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise ValueError(f'{path}: expected a state dict, found {type(state).__name__}.')
  return dict(state)


def expected_shapes(module: dinov2_lib.Dinov2) -> dict[str, tuple[int, ...]]:
  """Official tensor names -> shapes for a Dinov2 configuration (mask_token excluded)."""
  d, p, m = module.dim, module.patch_size, module.mlp_dim
  shapes = {'cls_token': (1, 1, d), 'pos_embed': (1, 1 + module.pos_grid**2, d),
            'patch_embed.proj.weight': (d, 3, p, p), 'patch_embed.proj.bias': (d,),
            'norm.weight': (d,), 'norm.bias': (d,)}
  for i in range(module.depth):
    b = f'blocks.{i}.'
    shapes.update({
        b + 'norm1.weight': (d,), b + 'norm1.bias': (d,),
        b + 'attn.qkv.weight': (3 * d, d), b + 'attn.qkv.bias': (3 * d,),
        b + 'attn.proj.weight': (d, d), b + 'attn.proj.bias': (d,),
        b + 'ls1.gamma': (d,), b + 'norm2.weight': (d,), b + 'norm2.bias': (d,),
        b + 'mlp.fc1.weight': (m, d), b + 'mlp.fc1.bias': (m,),
        b + 'mlp.fc2.weight': (d, m), b + 'mlp.fc2.bias': (d,), b + 'ls2.gamma': (d,)})
  return shapes


def convert_state_dict(state: Mapping[str, np.ndarray],
                       module: dinov2_lib.Dinov2 | None = None) -> dict[str, Any]:
  """Official-name numpy state dict -> Flax params of `module` (default: ViT-S/14).

  Raises:
    ValueError: naming every missing, unexpected or misshaped tensor (expected vs found shape).
  """
  module = module or dinov2_lib.Dinov2()
  expected = expected_shapes(module)
  problems = []
  for name, shape in expected.items():
    if name not in state:
      problems.append(f'missing {name} (expected shape {shape})')
    elif tuple(np.shape(state[name])) != shape:
      problems.append(f'{name}: expected shape {shape}, found {tuple(np.shape(state[name]))}')
  for name in state:
    if name not in expected and name not in OPTIONAL_KEYS:
      problems.append(f'unexpected {name} (shape {tuple(np.shape(state[name]))})')
  if problems:
    raise ValueError('DINOv2 weights do not match the configuration (dim={}, depth={}, '
                     'num_heads={}, mlp_dim={}, patch_size={}, pos_grid={}):\n  '.format(
                         module.dim, module.depth, module.num_heads, module.mlp_dim,
                         module.patch_size, module.pos_grid) + '\n  '.join(problems))
  f32 = lambda name: np.asarray(state[name], dtype=np.float32)
  linear = lambda name: {'kernel': f32(name + '.weight').T, 'bias': f32(name + '.bias')}
  norm = lambda name: {'scale': f32(name + '.weight'), 'bias': f32(name + '.bias')}
  params = {
      'cls_token': f32('cls_token'), 'pos_embed': f32('pos_embed'),
      'patch_embed': {'kernel': f32('patch_embed.proj.weight').transpose(2, 3, 1, 0),
                      'bias': f32('patch_embed.proj.bias')},
      'norm': norm('norm'),
  }
  for i in range(module.depth):
    b = f'blocks.{i}.'
    params[f'blocks_{i}'] = {
        'norm1': norm(b + 'norm1'), 'attn_qkv': linear(b + 'attn.qkv'),
        'attn_proj': linear(b + 'attn.proj'), 'ls1': {'gamma': f32(b + 'ls1.gamma')},
        'norm2': norm(b + 'norm2'), 'mlp_fc1': linear(b + 'mlp.fc1'),
        'mlp_fc2': linear(b + 'mlp.fc2'), 'ls2': {'gamma': f32(b + 'ls2.gamma')}}
  return params


def load_dinov2_weights(path: str, module: dinov2_lib.Dinov2 | None = None) -> dict[str, Any]:
  """Reads official DINOv2 weights (.pth or .safetensors) into Flax params of `module`.

  Args:
    path: a local file; nothing is downloaded.
    module: the Dinov2 configuration the weights must match (default ViT-S/14).

  Returns:
    The params pytree for `module.apply({'params': params}, pixels)`.
  """
  if not os.path.exists(path):
    raise ValueError(f'DINOv2 weights file {path!r} does not exist (download it yourself, e.g. '
                     'dinov2_vits14_pretrain.pth from the official DINOv2 release).')
  if path.endswith('.safetensors'):
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    state = safetensors.numpy.load_file(path)
  elif path.endswith(('.pth', '.pt', '.bin')):
    state = read_torch_state_dict(path)
  else:
    raise ValueError(f'Unknown weights format {path!r}; expected .pth/.pt/.bin or .safetensors.')
  return convert_state_dict(state, module)
