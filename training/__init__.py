"""Reproducible training of the notebook's one-input regression model."""

import os

# As in app/__init__.py: quiet TensorFlow's C++ logging and skip oneDNN.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
