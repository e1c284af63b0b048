"""The Keras module name for models: ``from minicnn import models; models.Sequential([...])``."""

from minicnn import load_model
from minicnn.model import Sequential

__all__ = ["Sequential", "load_model"]
