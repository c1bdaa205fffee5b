"""The choices of keras-svs settings, in one place, without TensorFlow.

The modules that act on a setting import its choices from here (for example
:data:`keras_svs.spectral.MASKS` is :data:`MASKS`; ``tests/test_batch.py`` checks that
:mod:`keras_svs.training` and :mod:`keras_svs.models` define the same), and the command
line builds its option lists from them without importing TensorFlow.
"""
from __future__ import annotations

#: Separation masks made from voice probabilities (:func:`keras_svs.spectral.make_mask`):
#: ``soft`` the probability, ``binary`` probability > threshold, ``thresholded``
#: probabilities below the threshold set to 0.
MASKS = ("soft", "binary", "thresholded")
#: How the bins above a model's band are masked (:func:`keras_svs.spectral.fit_bins`):
#: ``top`` repeats the top bin's mask, ``zero`` gives them none of the voice, ``mean`` the
#: mean of the band's top quarter in each frame.
EXTENSIONS = ("top", "zero", "mean")
#: How a patch model slides over time (:func:`keras_svs.separation.patch_weights`).
MODES = ("average", "centre")
#: The stems a separation writes, in this order.
STEMS = ("vocals", "accompaniment")
#: Inference arithmetic (:func:`keras_svs.models.inference.at_precision`).
INFERENCE_PRECISIONS = ("float32", "bfloat16")
#: Training arithmetic (``auto``: mixed_float16 on a GPU, float32 on a CPU).
TRAINING_PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
#: Fine-tuning losses (:data:`keras_svs.training.LOSSES`).
LOSSES = ("ce", "weighted", "psa")
#: Training batch loaders.
LOADERS = ("auto", "tf", "numpy")
#: Separation methods that :func:`keras_svs.evaluation.estimate` knows.
METHODS = ("model", "ibm", "irm", "mixture", "repet")
#: Output formats of separated stems (the file extension picks it).
CODECS = ("wav", "flac", "ogg")
#: Output sample formats: 16 and 24 bit PCM, 32 = float WAV.
BIT_DEPTHS = (16, 24, 32)
#: Placeholders of an output file name template (:func:`keras_svs.batch.output_paths`):
#: the input's file name without extension, the stem, the output extension.
PLACEHOLDERS = ("track", "stem", "codec")
#: Where each stem of an input goes, relative to the output folder.
DEFAULT_FILENAME = "{track}/{stem}.{codec}"
