"""LiteRT (formerly TensorFlow Lite): ``model.tflite``, converted by TensorFlow's own converter
(``tf.lite.TFLiteConverter.from_saved_model``), run by the LiteRT interpreter
(``ai_edge_litert.interpreter``) through its signature runners."""

import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from exportkit.errors import ConversionError
from exportkit.formats.base import Format, Runner, check_choice, unsupported

QUANTIZE = ("none", "float16", "dynamic_int8", "int8")
FILE = "model.tflite"
# converter text -> what it means for the model, and the way around it
KNOWN = {
    "FlexDelegate": "the model needs TensorFlow ops in LiteRT (Select TF ops): set formats.litert.select_tf_ops=true",
}
# the converter's words for an op without a LiteRT builtin: 'tf.HashTableV2' op is neither a custom op nor a flex op
NO_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


class LiteRT(Format):
    extra = "litert"
    requires = ("tensorflow",)
    runtime_requires = ("ai_edge_litert",)

    def __init__(
        self,
        quantize: str = "none",
        select_tf_ops: bool = False,
        optional: bool = False,
        tolerance: Optional[float] = None,
        min_top1: Optional[float] = None,
        representative_cases: int = 8,
        representative_inputs: Optional[str] = None,
    ):
        self.quantize = check_choice("formats.litert.quantize", quantize, QUANTIZE)
        self.select_tf_ops = bool(select_tf_ops)
        self.representative_cases = int(representative_cases)
        self.representative_inputs = representative_inputs
        super().__init__(optional, tolerance, min_top1)

    def defaults(self) -> Tuple[float, float]:
        return {"none": (1e-4, 1.0), "float16": (1e-2, 1.0), "dynamic_int8": (0.1, 0.9), "int8": (0.25, 0.8)}[
            self.quantize
        ]

    def options(self) -> Dict[str, Any]:
        options: Dict[str, Any] = {"quantize": self.quantize, "select_tf_ops": self.select_tf_ops}
        if self.representative_inputs:
            options["representative_inputs"] = self.representative_inputs
        return options

    def convert(self, saved_model: Path, out: Path, signatures: Dict[str, Dict[str, Any]]) -> None:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=list(signatures))
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + ([tf.lite.OpsSet.SELECT_TF_OPS] if self.select_tf_ops else [])
        converter.target_spec.supported_ops = ops
        if self.quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if self.quantize == "int8":
            examples = self.representative_inputs
            converter.representative_dataset = lambda: representative(signatures, self.representative_cases, examples)
        try:
            flat = converter.convert()
        except Exception as error:  # noqa: BLE001 - the converter's own exception types vary
            ops = sorted(set(NO_BUILTIN.findall(str(error))))
            if ops and not self.select_tf_ops:
                raise ConversionError(
                    f"formats.litert: the model uses TensorFlow ops LiteRT has no builtin for ({', '.join(ops)}); "
                    f"set formats.litert.select_tf_ops=true (the runtime then needs the Flex delegate), or leave "
                    f"litert out"
                ) from error
            raise unsupported("litert", error, KNOWN) from error
        (out / FILE).write_bytes(flat)

    def runner(self, directory: Path) -> Runner:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(directory / FILE))
        runners = {key: interpreter.get_signature_runner(key) for key in interpreter.get_signature_list()}

        def run(key: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            return {name: np.asarray(value) for name, value in runners[key](**inputs).items()}

        return run


def representative(signatures, count: int, examples: Optional[str] = None):
    """Calibration inputs for full-integer quantization, one example at a time: the real examples
    of ``examples`` (a ``verify.inputs`` file, read as verify reads it) when given, else ``count``
    seeded generated inputs of every signature (``exportkit.verification.cases``)."""
    from exportkit.verification.cases import load_examples, make_inputs

    if examples:
        for arrays in load_examples(examples, signatures).values():
            rows = next((a.shape[0] for a in arrays.values() if a.ndim), 1)
            for row in range(rows):
                yield {name: array[row : row + 1] for name, array in arrays.items()}
        return
    for arrays in make_inputs(signatures, [1] * count, seed=1).values():
        yield dict(arrays)
