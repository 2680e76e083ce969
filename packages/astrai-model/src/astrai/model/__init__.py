"""astrai.model: transformer, weight loading, tokenizer and chat templates for AstrAI."""

from .batch import ForwardBatch
from .chat_template import ChatTemplateError
from .config import PRESETS, ModelConfig
from .errors import ModelLoadError
from .loader import bundled_gguf_path, load_model, locate_model
from .tokenizer import IncrementalDetokenizer, Tokenizer
from .transformer import Transformer

__all__ = [
    "PRESETS",
    "ChatTemplateError",
    "ForwardBatch",
    "IncrementalDetokenizer",
    "ModelConfig",
    "ModelLoadError",
    "Tokenizer",
    "Transformer",
    "bundled_gguf_path",
    "load_model",
    "locate_model",
]
