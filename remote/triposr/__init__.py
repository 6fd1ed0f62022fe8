"""Our implementation of TripoSR (VAST-AI-Research / Stability AI), loading the published weights unchanged."""

from remote.triposr.config import TripoSRConfig, load_config
from remote.triposr.model import TripoSR
from remote.triposr.weights import load_model, resolve_device

__all__ = ["TripoSR", "TripoSRConfig", "load_config", "load_model", "resolve_device"]
