"""TF Serving's ``--model_config_file``: a ``ModelServerConfig`` text proto, written atomically.

``update`` rewrites (or creates) the file with one entry for the model: its base path, the
``specific`` version policy listing the versions on disk, and its version labels. Other models'
entries in the same file are kept as they are::

    update(Path("/srv/models/models.config"), "clf", Path("/srv/models/clf"), [3, 4], {"stable": 3})

writes::

    model_config_list {
      config {
        name: "clf"
        base_path: "/srv/models/clf"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 3 versions: 4 } }
        version_labels { key: "stable" value: 3 }
      }
    }

``specific`` rather than TF Serving's default ``latest { num_versions: 1 }``: a label may only
name a version the server has loaded, and every version kept on disk (the new one, the labelled
ones) is then served.
"""

import contextlib
import os
from pathlib import Path
from typing import Iterable, Mapping

from exportkit.artifact import lock
from exportkit.errors import ConfigError


def read(path: Path):
    """The file as a ``ModelServerConfig`` (empty when the file does not exist)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if Path(path).exists():
        try:
            text_format.Parse(Path(path).read_text(), config)
        except (text_format.ParseError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"serving.model_config_file={path} is not a TF Serving ModelServerConfig text "
                f"file ({str(error).splitlines()[0]}); fix it or give another file"
            ) from error
        if config.HasField("custom_model_config"):
            raise ConfigError(
                f"serving.model_config_file={path} holds a custom_model_config; exportkit writes "
                f"model_config_list entries only: give another file"
            )
    return config


def check(path: Path) -> None:
    """Raise ``ConfigError`` now (before exporting) for a file ``update`` could not rewrite."""
    read(path)
    if not os.access(Path(path).parent if not Path(path).exists() else path, os.W_OK):
        raise ConfigError(f"serving.model_config_file={path} is not writable; choose a writable file")


def update(path: Path, name: str, base_path: Path, versions: Iterable[int], labels: Mapping[str, int]) -> None:
    """Set ``name``'s entry in the config file at ``path`` and write it atomically."""
    from google.protobuf import text_format

    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        config = read(path)
        entries = config.model_config_list.config
        entry = next((e for e in entries if e.name == name), None) or entries.add()
        entry.Clear()
        entry.name, entry.base_path, entry.model_platform = name, str(base_path), "tensorflow"
        entry.model_version_policy.specific.versions.extend(sorted(versions))
        for label, number in sorted(labels.items()):
            entry.version_labels[label] = number
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            with open(tmp, "w") as out:
                out.write(text_format.MessageToString(config))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def _locked(path: Path):
    """One writer at a time for the config file (several base paths may share it)."""
    with lock.held(path.parent / f".{path.name}.lock"):
        yield
