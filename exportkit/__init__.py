"""exportkit: config-driven export of trained models to verified TensorFlow SavedModels.

The CLI is ``python -m exportkit``; the Python API mirrors TF 1.14's
``tf.keras.experimental``::

    import exportkit
    exportkit.export_saved_model(model, "/tmp/simple_keras_model")
    model = exportkit.load_from_saved_model("/tmp/simple_keras_model")

The API is imported lazily so ``import exportkit`` (and ``--help``) stays free of TensorFlow.
"""

__version__ = "0.1.0"
__all__ = ["export_saved_model", "load_from_saved_model", "shared_verifier", "__version__"]


def __getattr__(name):
    if name in ("export_saved_model", "load_from_saved_model"):
        from exportkit import api

        return getattr(api, name)
    if name == "shared_verifier":  # exports in its block verify with one process
        from exportkit.verification.process import shared_verifier

        return shared_verifier
    raise AttributeError(f"module 'exportkit' has no attribute {name!r}")
