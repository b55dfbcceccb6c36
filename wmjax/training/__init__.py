"""World-model training: loss, train state, step factories, optimiser, checkpoints, metrics,
encoder pretraining."""

from wmjax.training.adversarial import AdversarialConfig
from wmjax.training.adversarial import adversarial_loss
from wmjax.training.adversarial import attack
from wmjax.training.adversarial import compute_radii
from wmjax.training.adversarial import init_extra
from wmjax.training.adversarial import Radii
from wmjax.training.checkpoint import build_world_model
from wmjax.training.checkpoint import check_settings
from wmjax.training.checkpoint import Checkpointer
from wmjax.training.checkpoint import load_world_model
from wmjax.training.checkpoint import make_meta
from wmjax.training.checkpoint import world_model_kwargs
from wmjax.training.integrity import CorruptCheckpointError
from wmjax.training.integrity import CorruptCheckpointWarning
from wmjax.training.losses import encode_window
from wmjax.training.losses import latent_errors
from wmjax.training.losses import predict_loss
from wmjax.training.losses import PredictorInputs
from wmjax.training.losses import rollout_errors
from wmjax.training.losses import Targets
from wmjax.training.losses import teacher_forcing_loss
from wmjax.training.metrics import MetricWriter
from wmjax.training.metrics import read_metrics
from wmjax.training.optim import learning_rates
from wmjax.training.optim import make_optimizer
from wmjax.training.pretrain import pretrain_conv_autoencoder
from wmjax.training.pretrain import render_frames
from wmjax.training.probe import linear_probe_r2
from wmjax.training.probe import probe_encoder
from wmjax.training.probe import probe_motion
from wmjax.training.resume import check_pending
from wmjax.training.resume import raise_if_nonfinite
from wmjax.training.resume import Start
from wmjax.training.resume import start_or_resume
from wmjax.training.step import make_eval_step
from wmjax.training.step import make_train_step
from wmjax.training.token_cache import add_tokens
from wmjax.training.token_cache import maybe_add_tokens
from wmjax.training.train_state import create_train_state
from wmjax.training.train_state import full_params
from wmjax.training.train_state import split_params
from wmjax.training.train_state import TrainState

__all__ = [
    'AdversarialConfig',
    'add_tokens',
    'adversarial_loss',
    'attack',
    'build_world_model',
    'check_settings',
    'Checkpointer',
    'compute_radii',
    'CorruptCheckpointError',
    'CorruptCheckpointWarning',
    'create_train_state',
    'encode_window',
    'full_params',
    'init_extra',
    'latent_errors',
    'learning_rates',
    'linear_probe_r2',
    'load_world_model',
    'make_eval_step',
    'make_meta',
    'make_optimizer',
    'make_train_step',
    'maybe_add_tokens',
    'MetricWriter',
    'predict_loss',
    'probe_encoder',
    'probe_motion',
    'PredictorInputs',
    'pretrain_conv_autoencoder',
    'Radii',
    'check_pending',
    'raise_if_nonfinite',
    'read_metrics',
    'render_frames',
    'rollout_errors',
    'split_params',
    'Start',
    'start_or_resume',
    'Targets',
    'teacher_forcing_loss',
    'TrainState',
    'world_model_kwargs',
]

# Online World Modeling (PAPER.md section 4); its replay buffer is `wmjax.data.replay`.
from wmjax.training import online  # pylint: disable=g-import-not-at-top
from wmjax.training.online import collect_windows  # pylint: disable=g-import-not-at-top
from wmjax.training.online import owm_planner  # pylint: disable=g-import-not-at-top
from wmjax.training.online import trajectory_windows  # pylint: disable=g-import-not-at-top

__all__ += [
    'collect_windows',
    'online',
    'owm_planner',
    'trajectory_windows',
]
