"""Imports real mmsegmentation 1.2.2 for the fixture and config tools.

Install (README "Reference data"):
    pip install torch mmsegmentation==1.2.2 mmengine mmcv-lite==2.1.0 opencv-python

mmcv-lite has no compiled `mmcv.ops`, and `mmseg.utils.tokenizer` wants `ftfy`; OCRNet uses neither, but
importing mmseg's registries pulls both in. Stand-in modules are placed in `sys.modules` first: any attribute of
them is a function that raises when called, so nothing OCRNet runs can silently depend on them.
"""

import os
import sys
import types

MMSEG_CONFIGS_SUBDIR = os.path.join(".mim", "configs")


def _stand_in(name):
    module = types.ModuleType(name)

    def attribute(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr} is not available (stand-in module, see Tools/mmseg_env.py)")
        return unavailable

    module.__getattr__ = attribute
    return module


for _name in ("mmcv.ops", "ftfy"):
    if _name not in sys.modules:
        sys.modules[_name] = _stand_in(_name)

import mmcv  # noqa: E402
import mmengine  # noqa: E402
import mmseg  # noqa: E402
import torch  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

register_all_modules()


def config_dir():
    """mmseg's own config files, shipped inside the wheel."""
    return os.path.join(os.path.dirname(mmseg.__file__), MMSEG_CONFIGS_SUBDIR)


def ocrnet_configs():
    """(name, path) of every OCRNet config mmseg ships, sorted by name."""
    folder = os.path.join(config_dir(), "ocrnet")
    names = sorted(f[:-3] for f in os.listdir(folder) if f.startswith("ocrnet_") and f.endswith(".py"))
    return [(n, os.path.join(folder, n + ".py")) for n in names]


def versions():
    import cv2
    return {"mmseg": mmseg.__version__, "mmengine": mmengine.__version__, "mmcv": mmcv.__version__,
            "torch": torch.__version__, "opencv": cv2.__version__}
