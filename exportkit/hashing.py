"""sha256 of files, each file of an export read once.

The fingerprint's content uuid (``canonical.fingerprint_file``) and the manifest both hash
every file of an export; for a multi-GiB checkpoint reading it twice is most of the export's
time. Inside ``reuse_hashes()`` (the pipeline runs every export in one) a file unchanged since
it was hashed (same inode, size and mtime) is not read again; outside it, every call reads.
"""
import contextlib
import contextvars
import hashlib
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

_CACHE: contextvars.ContextVar[Optional[Dict[Tuple, str]]] = contextvars.ContextVar("hashes", default=None)


@contextlib.contextmanager
def reuse_hashes() -> Iterator[None]:
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (a checkpoint read whole would double peak memory).

    >>> file_sha256(Path("/dev/null"))[:12]
    'e3b0c44298fc'
    """
    cache = _CACHE.get()
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if cache is not None and key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if cache is not None:
        cache[key] = digest.hexdigest()
    return digest.hexdigest()
