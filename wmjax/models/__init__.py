"""World-model modules: frozen encoders, the frame-causal predictor, and the WorldModel struct."""

from wmjax.models.attention import frame_causal_attention
from wmjax.models.conv import ConvAutoencoder
from wmjax.models.dinov2 import Dinov2
from wmjax.models.dinov2_convert import load_dinov2_weights
from wmjax.models.dinov2_convert import read_torch_state_dict
from wmjax.models.encoders import ENCODERS
from wmjax.models.encoders import make_encoder
from wmjax.models.identity import IdentityEncoder
from wmjax.models.predictor import Predictor
from wmjax.models.predictor import frame_causal_mask
from wmjax.models.world_model import Latent
from wmjax.models.world_model import LatentSpec
from wmjax.models.world_model import ROLLOUT_MODES
from wmjax.models.world_model import WorldModel
from wmjax.models.world_model import default_config
from wmjax.models.world_model import make_world_model

__all__ = [
    'ConvAutoencoder', 'Dinov2', 'ENCODERS', 'IdentityEncoder', 'Latent', 'LatentSpec',
    'Predictor', 'ROLLOUT_MODES', 'WorldModel', 'default_config', 'frame_causal_attention',
    'frame_causal_mask',
    'load_dinov2_weights', 'make_encoder', 'make_world_model', 'read_torch_state_dict',
]
