"""What a version is and how it loads: the store, artifacts, runtimes, loader, registry.

``store`` finds versions on disk, ``registry`` fetches them from MLflow,
``artifact`` reads and writes the compiled artifact, ``compiler`` writes it
from a Keras model (TensorFlow, imported only when compiling), ``model_code``
and ``graph_ops`` say what code and ops a model file may make run, ``loader``
verifies a version in a child process (``load_child`` when it cannot fork),
``object_store`` mirrors S3, ``litert`` runs a flatbuffer,
``model`` holds a version in memory (bundle, runner), ``version_policy`` and
``rollout`` say which versions serve and how they share the traffic, ``limits`` and
``input_profile`` are what a version admits and what its monitor watches.

May import: ``app.ops``. Never the core, an adapter, ``app.config`` (which
reads its defaults from here) or ``training``.
"""
