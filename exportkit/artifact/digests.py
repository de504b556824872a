"""sha256 of files, each file of an export read once.

The fingerprint's content uuid (``canonical.fingerprint_file``) and the manifest both hash
every file of an export; for a multi-GiB checkpoint reading it twice is most of the export's
time. A ``HashCache`` (one per export, on the context) does not read a file again while it is
unchanged since it was hashed (same inode, size and mtime).
"""

import hashlib
import os
import threading
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple


class HashCache:
    """Remembers each file's sha256 by (path, inode, size, mtime).

    ``prefetch`` hashes files on a background thread while the export goes on (``hashlib`` and
    file reads release the GIL): the checkpoint, hashed while the graphs are traced and written;
    ``sha256`` then waits for a file's digest instead of reading the file again.
    """

    def __init__(self) -> None:
        self._known: Dict[Tuple, str] = {}
        self._pending: Dict[Tuple, Tuple[threading.Event, Dict[Tuple, str]]] = {}

    def sha256(self, path: Path) -> str:
        key = _key(path)
        if key in self._pending:
            done, digests = self._pending.pop(key)
            done.wait()
            if key in digests:
                self._known[key] = digests[key]
        if key not in self._known:  # not prefetched, or its prefetch failed: hashed here (and raises here)
            self._known[key] = file_sha256(path)
        return self._known[key]

    def remember(self, digests: Dict[Path, str]) -> None:
        """Digests computed as the files were written ({path: sha256 hex}), for files now closed."""
        for path, digest in digests.items():
            self._known[_key(path)] = digest

    def prefetch(self, paths: Iterable[Path]) -> None:
        """Start hashing ``paths`` (files) on one background thread."""
        keyed = [(Path(p), _key(p)) for p in paths]
        jobs = [(path, key) for path, key in keyed if key not in self._known and key not in self._pending]
        if not jobs:
            return
        done, digests = threading.Event(), {}

        def work() -> None:
            try:
                for path, key in jobs:
                    try:
                        digests[key] = file_sha256(path)
                    except OSError:
                        pass  # sha256() hashes it again and tells the error
            finally:
                done.set()

        for _, key in jobs:
            self._pending[key] = (done, digests)
        threading.Thread(target=work, name="exportkit-hash", daemon=True).start()


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
