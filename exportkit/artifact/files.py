"""The files a SavedModel directory is recognised by."""
from pathlib import Path
from typing import Optional

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"


def saved_model_file(directory: Path) -> Optional[Path]:
    """The directory's ``saved_model.pb`` or ``saved_model.pbtxt``, or None when it has neither.

    >>> saved_model_file(Path("/tmp/nothing_here")) is None
    True
    """
    for name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT):
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return None
