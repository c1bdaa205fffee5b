"""keras-svs: singing-voice separation (vocals vs accompaniment) in Keras 3 / TensorFlow.

After Lin et al. (2018), "Singing Voice Separation Using a Deep CNN Trained by Ideal Binary
Mask and Cross Entropy". The public face::

    from keras_svs import Separator, load_model
"""
__version__ = "0.1.0"

__all__ = ["Separator", "load_model", "__version__"]


def __getattr__(name):  # lazy: `import keras_svs` stays cheap (no TensorFlow import)
    if name == "Separator":
        from .separation import Separator

        return Separator
    if name == "load_model":
        from .models import load_model

        return load_model
    raise AttributeError(f"module 'keras_svs' has no attribute {name!r}")
