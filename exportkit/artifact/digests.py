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
    """The file's sha256, read through one reused 1 MiB buffer, as Python 3.11's
    ``hashlib.file_digest`` does (a checkpoint read whole would double peak memory; a new block
    per read costs fresh pages); through ``cache`` when one is given.

    >>> file_sha256(Path("/dev/null"))[:12]
    'e3b0c44298fc'
    """
    if cache is not None:
        return cache.sha256(path)
    digest, buffer = hashlib.sha256(), bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()
