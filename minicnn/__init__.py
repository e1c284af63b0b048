"""minicnn: a from-scratch convolutional neural network engine, written to be read."""

__version__ = "0.1.0"
