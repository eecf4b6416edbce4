"""Training: seeded fits saved as new versions with their lineage, and the compile command.

``python -m training`` trains the notebook's model (``train``) from
``data/train.csv`` (``data``), records its input profile (``profile``) and
compiles the version (app/runtime/compiler.py); ``--register`` logs it to
MLflow (``registry``). ``python -m training compile`` compiles saved or
registered versions (``compile``). Imports the runtime; the app never imports
training.
"""

import os

# As in app/__init__.py: quiet TensorFlow's C++ logging and skip oneDNN.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
