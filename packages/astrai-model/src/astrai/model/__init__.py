"""astrai.model: transformer, weight loading, tokenizer and chat templates for AstrAI."""

from .batch import ForwardBatch
from .chat_template import ChatTemplateError
from .config import PRESETS, ModelConfig, resolve_dtype
from .errors import ModelLoadError
from .loader import bundled_gguf_path, load_model
from .protocol import ForwardModel
from .tokenizer import IncrementalDetokenizer, Tokenizer
from .transformer import Transformer

__all__ = [
    "PRESETS",
    "ChatTemplateError",
    "ForwardBatch",
    "ForwardModel",
    "IncrementalDetokenizer",
    "ModelConfig",
    "ModelLoadError",
    "Tokenizer",
    "Transformer",
    "bundled_gguf_path",
    "load_model",
    "resolve_dtype",
]
