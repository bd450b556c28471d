from ._torchvision_compat import ensure_torchvision_importable as _e
_e()
__version__ = "0.1.0"
