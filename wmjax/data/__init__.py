"""Offline data: the on-disk dataset format, behaviour rollouts and training windows.

See docs/datasets.md for the format. Behaviour policies live in `wmjax.data.policies`, the
replay buffer of planner-induced windows (OWM) in `wmjax.data.replay`.
"""

from wmjax.data import replay
from wmjax.data.collect import collect
from wmjax.data.collect import rollout
from wmjax.data.dataset import check_compatible
from wmjax.data.dataset import compute_stats
from wmjax.data.dataset import Dataset
from wmjax.data.dataset import FORMAT_NAME
from wmjax.data.dataset import FORMAT_VERSION
from wmjax.data.dataset import load_dataset
from wmjax.data.dataset import matches_generation
from wmjax.data.dataset import read_meta
from wmjax.data.dataset import write_dataset
from wmjax.data.features import readout_names
from wmjax.data.features import readout_targets
from wmjax.data.features import readout_weights
from wmjax.data.features import state_features
from wmjax.data.features import StateFeatures
from wmjax.data.loader import add_pixels
from wmjax.data.loader import gather_windows
from wmjax.data.loader import iterate_windows
from wmjax.data.loader import sample_windows
from wmjax.data.loader import split
from wmjax.data.loader import nominal_stats
from wmjax.data.loader import Stats
from wmjax.data.loader import stats_from_meta
from wmjax.data.loader import to_device
from wmjax.data.loader import window_index
from wmjax.data.loader import WindowArrays
from wmjax.data.replay import mix_batches
from wmjax.data.replay import ReplayBuffer

__all__ = [
    'add_pixels',
    'check_compatible',
    'collect',
    'compute_stats',
    'Dataset',
    'FORMAT_NAME',
    'FORMAT_VERSION',
    'gather_windows',
    'iterate_windows',
    'load_dataset',
    'matches_generation',
    'mix_batches',
    'nominal_stats',
    'read_meta',
    'readout_names',
    'readout_targets',
    'readout_weights',
    'replay',
    'ReplayBuffer',
    'rollout',
    'sample_windows',
    'split',
    'state_features',
    'StateFeatures',
    'Stats',
    'stats_from_meta',
    'to_device',
    'window_index',
    'WindowArrays',
    'write_dataset',
]
