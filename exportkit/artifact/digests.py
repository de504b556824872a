"""sha256 of files, each file of an export read once.

The fingerprint's content uuid (``canonical.fingerprint_file``) and the manifest both hash
every file of an export; for a multi-GiB checkpoint reading it twice is most of the export's
time. A ``HashCache`` (one per export, on the context) does not read a file again while it is
unchanged since it was hashed (same inode, size and mtime).
"""

import hashlib
import os
from pathlib import Path
from typing import Dict, Optional, Tuple


class HashCache:
    """Remembers each file's sha256 by (path, inode, size, mtime)."""

    def __init__(self) -> None:
        self._known: Dict[Tuple, str] = {}

    def sha256(self, path: Path) -> str:
        key = _key(path)
        if key not in self._known:
            self._known[key] = file_sha256(path)
        return self._known[key]


def _key(path: Path) -> Tuple:
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def file_sha256(path: Path, cache: Optional[HashCache] = None) -> str:
    """The file's sha256, read in 1 MiB blocks (a checkpoint read whole would double peak memory);
    through ``cache`` when one is given.

    >>> file_sha256(Path("/dev/null"))[:12]
    'e3b0c44298fc'
    """
    if cache is not None:
        return cache.sha256(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
