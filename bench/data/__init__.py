"""CIFAR-10 data: sources and the decoded cache (source.py, cache.py), splits (splits.py), input
normalisations (normalize.py), batch augmentation (augment.py) and canvas placement for localization
(canvas.py). Images stay uint8 NCHW (0..255) until a Normalizer turns a batch into float32 on the
training device, so the whole data set (60k x 3 x 32 x 32 = 184 MB) is cheap to keep there."""

from .augment import augment
from .cache import atomic_save, cache_dir, locked
from .canvas import (
    CANVAS_GREY,
    CANVAS_SIDE,
    PLACEMENT_SEEDS,
    draw_placements,
    fixed_canvases,
    paste,
    place_on_canvas,
    placement_boxes,
    side_range,
)
from .normalize import FIT_MAX_IMAGES, NORMALIZATIONS, WHITEN_EPS, ChannelAffine, Normalizer, Projection, fit_normalizer
from .source import CIFAR10_CLASSES, SHARED_JPEG_SHA256, Cifar10, DataError, load_cifar10
from .splits import Splits, class_subset_splits, make_splits

__all__ = [
    "augment",
    "atomic_save",
    "cache_dir",
    "locked",
    "CANVAS_GREY",
    "CANVAS_SIDE",
    "PLACEMENT_SEEDS",
    "draw_placements",
    "fixed_canvases",
    "paste",
    "place_on_canvas",
    "placement_boxes",
    "side_range",
    "FIT_MAX_IMAGES",
    "NORMALIZATIONS",
    "WHITEN_EPS",
    "ChannelAffine",
    "Normalizer",
    "Projection",
    "fit_normalizer",
    "CIFAR10_CLASSES",
    "SHARED_JPEG_SHA256",
    "Cifar10",
    "DataError",
    "load_cifar10",
    "Splits",
    "class_subset_splits",
    "make_splits",
]
