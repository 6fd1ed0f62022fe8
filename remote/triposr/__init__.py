"""Our implementation of TripoSR (VAST-AI-Research / Stability AI), loading the published weights unchanged."""

from remote.triposr.config import TripoSRConfig, ViTConfig, load_config
from remote.triposr.model import SceneField, TripoSR
from remote.triposr.weights import build_random_model, load_model, random_state_dict, resolve_device

__all__ = [
    "SceneField",
    "TripoSR",
    "TripoSRConfig",
    "ViTConfig",
    "build_random_model",
    "load_config",
    "load_model",
    "random_state_dict",
    "resolve_device",
]
