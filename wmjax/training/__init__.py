"""World-model training: loss, train state, step factories, optimiser, checkpoints, metrics."""

from wmjax.training.checkpoint import build_world_model
from wmjax.training.checkpoint import Checkpointer
from wmjax.training.checkpoint import load_world_model
from wmjax.training.checkpoint import make_meta
from wmjax.training.checkpoint import world_model_kwargs
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
from wmjax.training.step import make_eval_step
from wmjax.training.step import make_train_step
from wmjax.training.train_state import create_train_state
from wmjax.training.train_state import full_params
from wmjax.training.train_state import split_params
from wmjax.training.train_state import TrainState

__all__ = [
    'build_world_model',
    'Checkpointer',
    'create_train_state',
    'encode_window',
    'full_params',
    'latent_errors',
    'learning_rates',
    'load_world_model',
    'make_eval_step',
    'make_meta',
    'make_optimizer',
    'make_train_step',
    'MetricWriter',
    'predict_loss',
    'PredictorInputs',
    'read_metrics',
    'rollout_errors',
    'split_params',
    'Targets',
    'teacher_forcing_loss',
    'TrainState',
    'world_model_kwargs',
]
