"""The bad-input catalogue: every user mistake, through the CLI (a fresh process, as a user runs
it) or in-process (the pipeline and the Python API, for cases that need a model), ends with
exit status 1 (or the ExportkitError named), exactly one ``error:`` line naming the offending key
or value, no traceback, nothing beside ``export_dir``, and every file already on disk untouched.

Most CLI cases fail at composition or at ``schema.validate``, before TensorFlow is imported
(about 1 s each); the cases that need a model run in-process.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from exportkit.errors import (
    ConfigError,
    ConversionError,
    ExportDirExistsError,
    ExportkitError,
    FilesystemError,
    LoadError,
    ModelSourceError,
    SignatureError,
    VerificationError,
    print_error,
)
from tests.conftest import leftovers, run_cli

KERAS = ("model=keras", "model.build._target_=tests.models.sequential")
SIG = "+signatures.serving_default={inputs: {%s}}"
JAX = ("model=jax", "model.build._target_=tests.jax_models.mlp_template", SIG % "x: {shape: [null, 6], dtype: float32}")
# TensorFlow's and absl's log lines (C++: I0000 00:00:... file.cc:12] ...; Python: WARNING:absl:...)
TF_LOG = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl"
    r"|(WARNING|ERROR|INFO):(absl|tensorflow):|.*oneDNN custom operations|.*cuInit)",
    re.M,
)


def cli(*args, error=None):
    return ("cli", args, error)


def run(*args, error):
    return ("export", args, error)


def api(call, error):
    return ("api", call, error)


# id -> (how, arguments, the expected error type for in-process cases), the text the line must name
CASES = {
    # --- composition: Hydra's errors as one line (CLI) ---
    "misspelt key": (cli("verify.atoll=1"), "verify.atoll (did you mean verify.atol?)"),
    "misspelt group": (cli("verfy.atol=1"), "verfy.atol (did you mean verify.atol?)"),
    "misspelt top-level key": (cli("sed=3"), "sed (did you mean seed?)"),
    "misspelt export_dir": (cli("export_dri=/tmp/x"), "export_dri (did you mean export_dir?)"),
    "key of another model option": (cli(*KERAS, "model.path=m.keras"), "model.path"),
    "unknown model key": (cli("model.nokey=1"), "model.nokey"),
    "unknown stage key": (cli("pipeline.stages.nostage.x=1"), "pipeline.stages.nostage.x"),
    "unknown hydra key": (cli("hydra.job.nokey=1"), "hydra.job.nokey"),
    "bool not a bool": (cli("overwrite=maybe"), "overwrite=maybe"),
    "as_text not a bool": (cli("as_text=sometimes"), "as_text=sometimes"),
    "serving_only not a bool": (cli("serving_only=perhaps"), "serving_only=perhaps"),
    "jit_compile not a bool": (cli("target.jit_compile=fast"), "target.jit_compile=fast"),
    "allow_unverified not a bool": (cli("verify.allow_unverified=please"), "verify.allow_unverified=please"),
    "seed not an int": (cli("seed=abc"), "seed=abc"),
    "seed a float": (cli("seed=1.5"), "seed=1.5"),
    "seed negative": (cli("seed=-1"), "seed=-1"),
    "seed 2**32": (cli("seed=4294967296"), "seed=4294967296"),
    "seed huge": (cli("seed=100000000000000000000"), "seed=100000000000000000000"),
    "batch_sizes empty": (cli("verify.batch_sizes=[]"), "verify.batch_sizes=[]"),
    "batch size zero": (cli("verify.batch_sizes=[0]"), "verify.batch_sizes has 0"),
    "batch size negative": (cli("verify.batch_sizes=[1,-2]"), "verify.batch_sizes has -2"),
    "batch size not an int": (cli("verify.batch_sizes=[a]"), "verify.batch_sizes=[a]"),
    "batch_sizes not a list": (cli("verify.batch_sizes=3"), "verify.batch_sizes=3"),
    "atol negative": (cli("verify.atol=-1"), "verify.atol=-1"),
    "atol infinite": (cli("verify.atol=inf"), "verify.atol=inf"),
    "rtol nan": (cli("verify.rtol=nan"), "verify.rtol=nan"),
    "atol not a number": (cli("verify.atol=big"), "verify.atol=big"),
    "verify not a mapping": (cli("verify=3"), "verify=3"),
    "device bogus": (cli("target.devices=[bogus]"), "'bogus'"),
    "device unknown type": (cli("target.devices=[/XPU:0]"), "'/XPU:0'"),
    "devices empty": (cli("target.devices=[]"), "target.devices=[]"),
    "devices not a list": (cli("target.devices=/GPU:0"), "target.devices=/GPU:0"),
    "unknown target": (cli("target=tpu"), "target=tpu"),
    "unknown model option": (cli("model=nope"), "model=nope"),
    "unknown pipeline option": (cli("pipeline=nope"), "pipeline=nope"),
    "unknown experiment": (cli("+experiment=nope"), "experiment=nope"),
    "model.build target not set": (cli("model=keras"), "model.build._target_"),
    "model.path not set": (cli("model=keras_file"), "model.path"),
    "jax build not set": (cli("model=jax"), "model.build._target_"),
    "export_dir empty": (cli("export_dir="), "export_dir"),
    "optimizer without loss": (cli(*KERAS, "compile.optimizer=adam"), "compile.optimizer"),
    "custom object not dotted": (cli(*KERAS, "+custom_objects.Scale=Scale"), "custom_objects.Scale='Scale'"),
    "custom_objects not a mapping": (cli("custom_objects=3"), "custom_objects=3"),
    "signature a number": (cli(*KERAS, "+signatures.serving_default=42"), "signatures.serving_default=42"),
    "signature dtype": (cli(*KERAS, SIG % "x: {shape: [null, 6], dtype: float31}"), "float31"),
    "signature negative dim": (cli(*KERAS, SIG % "x: {shape: [null, -6]}"), "shape=[None, -6]"),
    "signature malformed": (cli(*KERAS, "+signatures.serving_default={inputz: {}}"), "signatures.serving_default"),
    "signature no inputs": (
        cli(*KERAS, "+signatures.serving_default={inputs: {}}"),
        "signatures.serving_default.inputs",
    ),
    "signature shape not a list": (cli(*KERAS, SIG % "x: {shape: 5}"), "signatures.serving_default"),
    "override syntax": (cli("verify.atol=[1,"), "'verify.atol=[1,'"),
    "override without =": (cli("export_dir"), "'export_dir'"),
    "append an existing key": (cli("+seed=3"), "+seed"),
    "delete a missing key": (cli("~nokey"), "~nokey"),
    "config dir missing": (cli("--config-dir", "/nonexistent/conf"), "/nonexistent/conf"),
    # --- through TensorFlow, in a fresh process ---
    "cli: unimportable target keeps its cause": (
        cli("model=keras", "model.build._target_=no_such_module.factory"),
        "No module named 'no_such_module'",
    ),
    "cli: signature of the wrong rank": (cli(*KERAS, SIG % "x: {shape: [null]}"), "has rank 1"),
    "cli: text .h5": (cli("model=keras_file", "model.path={tree}/text.h5"), "not an HDF5 file"),
    "cli: parent of export_dir is a file": (cli(*KERAS, "export_dir={tree}/keep.txt/model"), "keep.txt"),
    # --- in-process pipeline: cases that need a model ---
    "unimportable target": (
        run("model=keras", "model.build._target_=no_such_module.factory", error=ModelSourceError),
        "No module named 'no_such_module'",
    ),
    "target attribute missing": (
        run("model=keras", "model.build._target_=tests.models.sequentail", error=ModelSourceError),
        "sequentail",
    ),
    "factory returns no model": (
        run("model=keras", "model.build._target_=tests.models.not_a_model", error=ModelSourceError),
        "not a keras.Model",
    ),
    "bad factory kwarg": (run(*KERAS, "+model.build.colour=red", error=ModelSourceError), "colour"),
    "unknown signature input": (
        run(*KERAS, SIG % "y: {shape: [null, 6]}", error=SignatureError),
        "signatures.serving_default.inputs.y: the model has no input 'y'; its inputs are x",
    ),
    "signature wrong width": (
        run(*KERAS, SIG % "x: {shape: [null, 7]}", error=SignatureError),
        "dimension 1 is 7 but the model's input 'x' has 6",
    ),
    "signature wrong rank": (run(*KERAS, SIG % "x: {shape: [null, 6, 1]}", error=SignatureError), "has rank 3"),
    "signature lacks an input": (
        run(
            "model=keras",
            "model.build._target_=tests.models.functional_multi_io",
            SIG % "image: {shape: [null, 5]}",
            error=SignatureError,
        ),
        "meta",
    ),
    "custom object unimportable": (
        run(*KERAS, "+custom_objects.Scale=tests.models.NoSuchLayer", error=ModelSourceError),
        "custom_objects.Scale='tests.models.NoSuchLayer'",
    ),
    "custom object module missing": (
        run(*KERAS, "+custom_objects.Scale=nowhere.Scale", error=ModelSourceError),
        "nowhere",
    ),
    "stage target unimportable": (
        run(*KERAS, "pipeline.stages.trace._target_=nowhere.Trace", error=ConfigError),
        "pipeline.stages.trace._target_='nowhere.Trace'",
    ),
    "disabled stage needed later": (
        run(*KERAS, "pipeline.stages.trace=null", error=ConfigError),
        "pipeline.stages.write_graphs needs `graphs`",
    ),
    "all stages disabled": (
        run(
            *KERAS,
            *(f"pipeline.stages.{s}=null" for s in ("build", "trace", "write_checkpoint", "write_graphs", "verify")),
            error=ConfigError,
        ),
        "pipeline.stages",
    ),
    "in_memory from the config": (run("model=in_memory", error=ConfigError), "model=in_memory"),
    "unknown optimizer": (
        run(*KERAS, "compile.optimizer=nosuchopt", "compile.loss=mse", error=ConfigError),
        "nosuchopt",
    ),
    "missing model file": (
        run("model=keras_file", "model.path={tree}/absent.keras", error=ModelSourceError),
        "absent.keras",
    ),
    "model file of another kind": (
        run("model=keras_file", "model.path={tree}/keep.txt", error=ModelSourceError),
        "keep.txt",
    ),
    "text .h5": (run("model=keras_file", "model.path={tree}/text.h5", error=ModelSourceError), "text.h5"),
    "truncated .h5": (
        run("model=keras_file", "model.path={tree}/truncated.h5", error=ModelSourceError),
        "truncated.h5",
    ),
    "corrupt .keras": (
        run("model=keras_file", "model.path={tree}/corrupt.keras", error=ModelSourceError),
        "corrupt.keras",
    ),
    "truncated .keras": (
        run("model=keras_file", "model.path={tree}/truncated.keras", error=ModelSourceError),
        "truncated.keras",
    ),
    ".keras without config.json": (
        run("model=keras_file", "model.path={tree}/empty.keras", error=ModelSourceError),
        "empty.keras",
    ),
    "jax without signatures": (
        run("model=jax", "model.build._target_=tests.jax_models.mlp", error=SignatureError),
        "signatures",
    ),
    "jax platform misspelt": (
        run(
            "model=jax",
            "model.build._target_=tests.jax_models.mlp",
            JAX[2],
            "target.platforms=[gpu]",
            error=ConfigError,
        ),
        "target.platforms",
    ),
    "npz not a zip": (run(*JAX, "model.params_path={tree}/text.npz", error=ModelSourceError), "text.npz"),
    "npz truncated": (run(*JAX, "model.params_path={tree}/truncated.npz", error=ModelSourceError), "truncated.npz"),
    "npz pickled": (run(*JAX, "model.params_path={tree}/pickled.npz", error=ModelSourceError), "pickled.npz"),
    "npz wrong shapes": (run(*JAX, "model.params_path={tree}/wide.npz", error=ModelSourceError), "wide.npz"),
    "params not npz": (run(*JAX, "model.params_path={tree}/keep.txt", error=ConfigError), "keep.txt"),
    "params missing": (run(*JAX, "model.params_path={tree}/absent.npz", error=ModelSourceError), "absent.npz"),
    "export_dir exists": (run(*KERAS, "export_dir={tree}/old_export", error=ExportDirExistsError), "overwrite=true"),
    "parent of export_dir is a file": (
        run(*KERAS, "export_dir={tree}/keep.txt/model", error=FilesystemError),
        "keep.txt",
    ),
    "export_dir name too long": (
        run(*KERAS, "export_dir={tree}/" + "m" * 250, error=FilesystemError),
        "export_dir name",
    ),
    "optional verify failed": (
        run(
            "model=keras",
            "model.build._target_=tests.models.stochastic",
            "+pipeline.stages.verify.required=false",
            error=VerificationError,
        ),
        "verify.allow_unverified=true",
    ),
    # --- the Python API's own arguments ---
    "overrides a string": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, overrides="seed=3"), ConfigError),
        "overrides='seed=3'",
    ),
    "overrides not strings": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, overrides=[3]), ConfigError),
        "overrides=[3]",
    ),
    "api misspelt override": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, overrides=["verify.atoll=1"]), ConfigError),
        "did you mean verify.atol?",
    ),
    "api unknown option": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, overrides=["target=tpu"]), ConfigError),
        "target=tpu",
    ),
    "custom object not a class": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, custom_objects={"X": 42}), ConfigError),
        "custom_objects['X'] is 42",
    ),
    "custom_objects not a dict": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, custom_objects=[1]), ConfigError),
        "custom_objects is a list",
    ),
    "model not a model": (
        api(lambda ek, m, d, t: ek.export_saved_model(42, d), ModelSourceError),
        "was given a builtins.int",
    ),
    "path None": (api(lambda ek, m, d, t: ek.export_saved_model(m, None), ConfigError), "saved_model_path=None"),
    "api as_text not a bool": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, as_text="yes"), ConfigError),
        "as_text='yes'",
    ),
    "input_signature not specs": (
        api(lambda ek, m, d, t: ek.export_saved_model(m, d, input_signature=[42]), SignatureError),
        "input_signature",
    ),
    "input_signature wrong width": (
        api(
            lambda ek, m, d, t: ek.export_saved_model(
                m, d, input_signature=[__import__("tensorflow").TensorSpec([None, 7], name="x")]
            ),
            SignatureError,
        ),
        "dimension 1 is 7",
    ),
    # --- loading and reproducing a missing, truncated, tampered or foreign export ---
    "load missing dir": (api(lambda ek, m, d, t: ek.load_from_saved_model(d), LoadError), "no such directory"),
    "load a file": (api(lambda ek, m, d, t: ek.load_from_saved_model(t / "keep.txt"), LoadError), "keep.txt"),
    "load a foreign dir": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t), LoadError),
        "not a SavedModel directory",
    ),
    "load truncated json": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t / "truncated_json"), LoadError),
        "saved_model.json cannot be read as JSON",
    ),
    "load json a list": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t / "list_json"), LoadError),
        "holds a JSON list",
    ),
    "load os.system": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t / "os_system"), LoadError),
        "os.system, which is not a Keras class",
    ),
    "load garbage config": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t / "garbage_json"), LoadError),
        "saved_model.json does not describe",
    ),
    "load without checkpoint": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t / "no_variables"), LoadError),
        "variables",
    ),
    "load custom object not a class": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t / "good", custom_objects={"X": 42}), ConfigError),
        "custom_objects['X']",
    ),
    "load safe_mode not a bool": (
        api(lambda ek, m, d, t: ek.load_from_saved_model(t / "good", safe_mode="no"), ConfigError),
        "safe_mode='no'",
    ),
    "reproduce into a non-empty --out": (
        api(lambda ek, m, d, t: _reproduce(t / "good", t / "old_export"), None),
        "--out",
    ),
    "reproduce truncated manifest": (
        api(lambda ek, m, d, t: _reproduce(t / "truncated_manifest", d), None),
        "manifest.json cannot be read as JSON",
    ),
    "reproduce foreign manifest": (
        api(lambda ek, m, d, t: _reproduce(t / "foreign_manifest", d), None),
        "`config` is missing",
    ),
    # --- names a format cannot hold, and JAX functions that do not fit their signature ---
    "non-ASCII layer name": (
        api(lambda ek, m, d, t: ek.export_saved_model(_named("dichte_ü"), d), ModelSourceError),
        "layer or variable 'dichte_ü'",
    ),
    "JAX signature that does not fit the params": (
        api(lambda ek, m, d, t: _jax_misfit(ek, d), ConversionError),
        "got (5,) and (4,)",
    ),
}


def _named(name):
    import keras

    return keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2, name=name)])


def _jax_misfit(ek, export_dir):
    import tensorflow as tf

    def apply_fn(params, x):
        return x @ params["w"]

    spec = [tf.TensorSpec([None, 5], tf.float32, name="x")]
    return ek.export_saved_model((apply_fn, {"w": np.ones((4, 2), "float32")}), export_dir, input_signature=spec)


def _reproduce(export_dir, out):
    from exportkit import reproduce

    return reproduce.main([str(export_dir), "--out", str(out)])


@pytest.fixture(scope="module")
def reference_export(tmp_path_factory):
    """One real export (verify off), copied into each case's tree and altered there."""
    from tests.conftest import export

    path = tmp_path_factory.mktemp("reference") / "good"
    export(*KERAS, f"export_dir={path}", "pipeline.stages.verify=null")
    return path


def make_tree(root: Path, reference: Path) -> None:
    """Files already on disk: inputs the cases point at, exports to load, an old export."""
    root.mkdir(parents=True)
    (root / "keep.txt").write_text("user data\n")
    (root / "old_export").mkdir()
    (root / "old_export" / "saved_model.pb").write_bytes(b"an old export")
    (root / "text.h5").write_text("this is not a model\n")
    (root / "truncated.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    (root / "corrupt.keras").write_bytes(os.urandom(300))
    with zipfile.ZipFile(root / "full.zip", "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}) * 50)
        archive.writestr("model.weights.h5", os.urandom(2000))
    (root / "truncated.keras").write_bytes((root / "full.zip").read_bytes()[:700])
    with zipfile.ZipFile(root / "empty.keras", "w") as archive:
        archive.writestr("readme.txt", "no model here")
    (root / "text.npz").write_text("not arrays\n")
    from exportkit.jax.params import save_params
    from tests import jax_models

    save_params(root / "full.npz", jax_models.mlp()[1])
    (root / "truncated.npz").write_bytes((root / "full.npz").read_bytes()[:300])
    np.savez(root / "pickled.npz", **{"layers/0/kernel": np.array([{"a": 1}], dtype=object)})
    save_params(root / "wide.npz", jax_models.mlp(features=9)[1])
    shutil.copytree(reference, root / "good")
    for name, change in {
        "truncated_json": lambda d: (d / "assets/saved_model.json").write_text('{"class_name": "Seq'),
        "list_json": lambda d: (d / "assets/saved_model.json").write_text("[1, 2]"),
        "os_system": lambda d: (d / "assets/saved_model.json").write_text(
            json.dumps({"module": "os", "class_name": "system", "config": {"command": "echo hacked"}})
        ),
        "garbage_json": lambda d: (d / "assets/saved_model.json").write_text(
            json.dumps({"module": "keras", "class_name": "Sequential", "config": 7})
        ),
        "no_variables": lambda d: shutil.rmtree(d / "variables"),
        "truncated_manifest": lambda d: (d / "assets.extra/manifest.json").write_text('{"config": {'),
        "foreign_manifest": lambda d: (d / "assets.extra/manifest.json").write_text('{"files": {}}'),
    }.items():
        shutil.copytree(reference, root / name)
        change(root / name)
    for path in [root, *root.rglob("*")]:  # an old mtime: any rewrite shows
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


def snapshot(root: Path):
    """Every file's sha256 and mtime, every directory's existence (the lock beside export_dir
    comes and goes in its parent)."""
    return {
        p.relative_to(root).as_posix(): ("dir",)
        if p.is_dir()
        else (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in [root, *root.rglob("*")]
    }


def error_lines(text: str):
    return [line for line in text.splitlines() if re.match(r"^exportkit(\.reproduce)?: error: ", line)]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_touches_nothing(case, tmp_path, reference_export, capsys):
    (how, args, error), needle = CASES[case]
    tree = tmp_path / "tree"
    make_tree(tree, reference_export)
    export_dir = tmp_path / "exports" / "model"
    before = snapshot(tree)
    fill = lambda a: str(a).replace("{tree}", str(tree))  # noqa: E731

    if how == "cli":
        given = [fill(a) for a in args]
        if not any(a.startswith("export_dir=") for a in given):
            given.append(f"export_dir={export_dir}")
        else:
            export_dir = Path(next(a for a in given if a.startswith("export_dir=")).split("=", 1)[1] or export_dir)
        done = run_cli(*given, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
        assert done.returncode == 1, done.stdout + done.stderr
        output = done.stdout + done.stderr
        assert not TF_LOG.search(output), output
    elif how == "export":
        from tests.conftest import export

        given = [fill(a) for a in args]
        if not any(a.startswith("export_dir=") for a in given):
            given.append(f"export_dir={export_dir}")
        else:
            export_dir = Path(next(a for a in given if a.startswith("export_dir=")).split("=", 1)[1])
        with pytest.raises(error) as raised:
            export(*given)
        output = _told(raised.value)
    else:
        import keras

        import exportkit
        from tests import models

        if error is None:  # exportkit.reproduce's main(): an exit status and its own line
            status = args(exportkit, None, export_dir, tree)
            assert status == 1
            output = capsys.readouterr().err
        else:
            with pytest.raises(error) as raised:
                args(exportkit, models.sequential(), export_dir, tree)
            output = _told(raised.value)
        keras.backend.clear_session()

    lines = error_lines(output)
    assert len(lines) == 1, output
    assert needle in lines[0], lines[0]
    assert "Traceback" not in output
    if export_dir != tree / "old_export":
        assert [p for p in leftovers(export_dir) if p.exists()] == [], leftovers(export_dir)
    else:
        assert leftovers(export_dir) == [export_dir]
    assert snapshot(tree) == before


def _told(error: BaseException) -> str:
    """What the CLI prints for this exception: one line, or a traceback for a bug."""
    assert isinstance(error, ExportkitError), repr(error)
    out = io.StringIO()
    with contextlib.redirect_stderr(out):
        print_error(error)
    return out.getvalue()


def test_catalogue_size():
    assert len(CASES) >= 80
    assert sum(1 for (how, _, _), _ in CASES.values() if how == "cli") >= 40


def test_unverified_export_is_published_only_when_allowed(tmp_path):
    """An optional verify stage that fails leaves an export with no verified case: refused
    (above), published with verify.allow_unverified=true, the manifest and summary say so."""
    from exportkit import pipeline
    from exportkit.report import Reporter
    from tests.conftest import compose

    export_dir = tmp_path / "model"
    out = io.StringIO()
    cfg = compose(
        "model=keras",
        "model.build._target_=tests.models.stochastic",
        f"export_dir={export_dir}",
        "+pipeline.stages.verify.required=false",
        "verify.allow_unverified=true",
    )
    result = pipeline.Export(pipeline.resolved(cfg), reporter=Reporter(file=out)).run()
    assert result.manifest["verification"]["verified"] is False
    assert "verify stage failed" in result.manifest["verification"]["reason"]
    assert "UNVERIFIED" in out.getvalue()
    assert (export_dir / "saved_model.pb").exists()


def test_cli_prints_no_tensorflow_or_absl_logs(tmp_path):
    """A fresh successful run prints only exportkit's own lines, and so does a user error found
    after TensorFlow loaded."""
    done = run_cli(f"hydra.run.dir={tmp_path / 'run'}", check=True)
    assert not TF_LOG.search(done.stdout + done.stderr), done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("export: ")
    assert "verified: 2 cases on /CPU:0" in done.stdout
