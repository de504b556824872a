"""Models whose graphs need ops from another library (keras-hub's tokenizers: tensorflow_text's
ops), and ``exportkit verify PATH`` on the export alone, without the user's code."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from exportkit.artifact import manifest
from tests.conftest import ROOT, run_cli

VOCABULARY = ["[PAD]", "[UNK]", "the", "quick", "brown", "fox", "jump", "##s", "over", "lazy", "dog"]
SENTENCES = np.array(["the quick brown fox", "jumps over the lazy dog", "the fox", "a dog jumps"])


def wordpiece_classifier():
    """keras-hub's WordPieceTokenizer (built from an explicit vocabulary) before a small classifier."""
    import keras
    import keras_hub

    text = keras.Input(shape=(), dtype="string", name="text")
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=VOCABULARY, sequence_length=8, lowercase=True)
    ids = tokenizer(text)
    hidden = keras.layers.Embedding(len(VOCABULARY), 4, name="embed")(ids)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(hidden)
    return keras.Model(text, keras.layers.Dense(3, activation="softmax", name="probs")(pooled))


@pytest.fixture(scope="module")
def tokenizer_export(tmp_path_factory):
    import exportkit

    root = tmp_path_factory.mktemp("op_libraries")
    model = wordpiece_classifier()
    want = np.asarray(model(SENTENCES))
    exportkit.export_saved_model(model, root / "m", verbose=False)  # no custom_objects given
    return root, want


def test_the_op_library_is_found_imported_for_verify_and_recorded(tokenizer_export):
    root, _ = tokenizer_export
    record = manifest.read(root / "m")
    assert record.verify_status()["status"] == "ok"
    library = record.op_libraries["tensorflow_text"]
    from importlib import metadata

    assert library["distribution"] == "tensorflow-text" and library["version"] == metadata.version("tensorflow-text")
    assert {"FastWordpieceTokenizeWithOffsets", "RegexSplitWithOffsets"} <= set(library["ops"])
    shown = run_cli("inspect", root / "m", cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "needs op library tensorflow_text" in shown.stdout and "FastWordpieceTokenizeWithOffsets" in shown.stdout


def test_a_fresh_process_with_the_op_library_reads_it_back(tokenizer_export):
    root, want = tokenizer_export
    code = textwrap.dedent(
        """
        import sys, numpy as np, tensorflow as tf, tensorflow_text  # noqa: F401  (its ops)
        loaded = tf.saved_model.load(sys.argv[1])
        out = loaded.signatures["serving_default"](text=tf.constant(sys.argv[2].split("|")))
        np.save(sys.argv[3], next(iter(out.values())).numpy())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root / "m"), "|".join(SENTENCES), str(root / "got.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(root / "got.npy"), want, atol=1e-6)


def test_verify_path_imports_the_op_library_and_names_it_when_it_is_missing(tokenizer_export, tmp_path):
    root, _ = tokenizer_export
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("verify", root / "m", "--json", cwd=empty)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    # a host where tensorflow_text does not import: one line naming the step and the cause
    shadow = tmp_path / "shadow" / "tensorflow_text"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('tensorflow_text is broken on this host')\n")
    done = run_cli("verify", root / "m", cwd=empty, env={"PYTHONPATH": f"{shadow.parent}:{ROOT}"})
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "importing tensorflow_text: ImportError: tensorflow_text is broken on this host" in lines[0]
    log = lines[0].rsplit("(its output: ", 1)[1].rstrip(")")
    assert "Traceback" in open(log).read()


def test_an_unregistered_op_and_an_absent_library_are_one_line_each():
    from exportkit.artifact.manifest import Manifest
    from exportkit.errors import ExportkitError
    from exportkit.verification.existing import op_libraries_here
    from exportkit.verification.worker import cause

    error = RuntimeError(
        "\nOp type not registered 'SentencepieceTokenizeOp' in binary running on host. Make sure the Op "
        "and Kernel are registered in the binary running in this process."
    )
    assert cause(error) == (
        "op SentencepieceTokenizeOp is not registered in this process (it is provided by tensorflow_text): "
        "import the library that registers it with verify.imports=[tensorflow_text]"
    )
    recorded = Manifest(
        config={}, op_libraries={"absent_ops": {"distribution": "absent-ops", "version": "1.2", "ops": ["Absent"]}}
    )
    with pytest.raises(
        ExportkitError,
        match=r"ops of absent_ops \(Absent\), which is not installed here: pip install absent-ops==1\.2$",
    ):
        op_libraries_here(recorded)


def test_verify_path_needs_no_custom_object_module(tmp_path):
    """An export made with custom_objects verifies from an empty directory on a host without the
    module that defines them (every other reader loads it without Python code too)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "my_layers.py").write_text(
        textwrap.dedent(
            """
            import keras

            class Scale(keras.layers.Layer):
                def build(self, shape):
                    self.w = self.add_weight(shape=(shape[-1],), initializer="ones", name="w")

                def call(self, x):
                    return x * self.w


            def build():
                inputs = keras.Input((4,), name="x")
                return keras.Model(inputs, keras.layers.Dense(2, name="out")(Scale(name="scale")(inputs)))
            """
        )
    )
    done = run_cli(
        "model=keras",
        "model.build._target_=my_layers.build",
        "+custom_objects.Scale=my_layers.Scale",
        f"export_dir={tmp_path / 'm'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"PYTHONPATH": f"{code}:{ROOT}"},
    )
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("verify", tmp_path / "m", cwd=empty, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "my_layers" not in done.stderr
