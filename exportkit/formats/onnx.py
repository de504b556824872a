"""ONNX: ``model.onnx`` (the serving signature), converted by tf2onnx from the SavedModel
(``tf2onnx.tf_loader.from_saved_model`` + ``tf2onnx.convert.from_graph_def``, what its command
line does), run by ONNX Runtime on the CPU."""

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from exportkit.errors import ConversionError
from exportkit.formats.base import Format, Runner, refuses_jax2tf, unsupported

FILE = "model.onnx"
KNOWN: Dict[str, str] = {}


class Onnx(Format):
    extra = "onnx"
    requires = ("tf2onnx",)
    runtime_requires = ("onnxruntime",)
    refused_ops = refuses_jax2tf("onnx", "tf2onnx")

    def __init__(
        self,
        opset: int = 17,
        optional: bool = False,
        tolerance: Optional[float] = None,
        min_top1: Optional[float] = None,
    ):
        self.opset = int(opset)
        super().__init__(optional, tolerance, min_top1)

    def options(self) -> Dict[str, Any]:
        return {"opset": self.opset}

    def convert(self, saved_model: Path, out: Path, signatures: Dict[str, Dict[str, Any]]) -> None:
        if len(signatures) != 1:
            raise ConversionError(
                f"formats.onnx: an ONNX model has one signature and this export has {len(signatures)} "
                f"({', '.join(signatures)}); export one signature for onnx"
            )
        from tf2onnx import convert, tf_loader

        key = next(iter(signatures))
        try:
            graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
                str(saved_model), None, None, tag="serve", signatures=[key], return_tensors_to_rename=True
            )
            convert.from_graph_def(
                graph_def,
                input_names=inputs,
                output_names=outputs,
                opset=self.opset,
                tensors_to_rename=renames,
                output_path=str(out / FILE),
            )
        except Exception as error:  # noqa: BLE001 - tf2onnx raises many types
            raise unsupported("onnx", error, KNOWN) from error
        if not (out / FILE).is_file():
            raise ConversionError("formats.onnx: tf2onnx wrote no model.onnx")
        unconverted = unconverted_ops(out / FILE)
        if unconverted:
            raise ConversionError(
                f"formats.onnx: tf2onnx cannot convert the TensorFlow ops {', '.join(unconverted)} (string ops, "
                f"lookup tables and other libraries' ops have no ONNX equivalent); leave onnx out for this model"
            )
        number_dims(out / FILE)

    def runner(self, directory: Path) -> Runner:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(directory / FILE), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]

        def run(key: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            values = session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})
            return dict(zip(names, values))

        return run


def number_dims(path: Path) -> None:
    """tf2onnx names each unknown dimension from a counter of the process (``unk__17``), so the
    same model converted twice differs: rename them in order of appearance (``unk__0``, ...)."""
    import onnx

    model = onnx.load(str(path))
    names: Dict[str, str] = {}
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param.startswith("unk__"):
                dim.dim_param = names.setdefault(dim.dim_param, f"unk__{len(names)}")
    onnx.save(model, str(path))


def unconverted_ops(path: Path) -> List[str]:
    """The op types in the written model that no ONNX opset defines: TensorFlow ops tf2onnx left
    as they were (it logs them and writes the model anyway, which ONNX Runtime then cannot load)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sorted({n.op_type for n in model.graph.node if not onnx.defs.has(n.op_type, n.domain)})
