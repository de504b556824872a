"""OpenVINO: ``model.xml`` + ``model.bin`` (the serving signature), converted by OpenVINO's
TensorFlow frontend (``openvino.frontend``) from the SavedModel and written by ``openvino.save_model`` (weights
compressed to FP16 with ``compress_to_fp16``), run by the OpenVINO runtime on the CPU at the
precision ``inference_precision`` asks (``INFERENCE_PRECISION_HINT``; f32 by default)."""

import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from exportkit.errors import ConversionError
from exportkit.formats.base import Format, Runner, check_choice, refuses_jax2tf, unsupported

FILE = "model.xml"
KNOWN: Dict[str, str] = {}
NO_RULE = re.compile(r"No conversion rule found for operations: ([^\n]+)")


class OpenVino(Format):
    extra = "openvino"
    requires = ("openvino",)
    runtime_requires = ("openvino",)
    refused_ops = refuses_jax2tf("openvino", "OpenVINO's TensorFlow frontend")

    def __init__(
        self,
        compress_to_fp16: bool = False,
        inference_precision: str = "f32",
        optional: bool = False,
        tolerance: Optional[float] = None,
        min_top1: Optional[float] = None,
    ):
        self.compress_to_fp16 = bool(compress_to_fp16)
        self.inference_precision = check_choice(
            "formats.openvino.inference_precision", inference_precision, ("f32", "f16", "bf16")
        )
        super().__init__(optional, tolerance, min_top1)

    def defaults(self) -> Tuple[float, float]:
        return (1e-4, 1.0) if self.inference_precision == "f32" and not self.compress_to_fp16 else (3e-2, 1.0)

    def options(self) -> Dict[str, Any]:
        return {"compress_to_fp16": self.compress_to_fp16, "inference_precision": self.inference_precision}

    def convert(self, saved_model: Path, out: Path, signatures: Dict[str, Dict[str, Any]]) -> None:
        if len(signatures) != 1:
            raise ConversionError(
                f"formats.openvino: OpenVINO converts one signature and this export has {len(signatures)} "
                f"({', '.join(signatures)}); export one signature for openvino"
            )
        import openvino
        from openvino.frontend import FrontEndManager

        try:
            # OpenVINO's TensorFlow frontend, as openvino.convert_model uses it, without the
            # command-line tool's usage telemetry (sent unless the user opted out): nothing leaves the machine
            frontend = FrontEndManager().load_by_framework("tf")
            model = frontend.convert(frontend.load(str(saved_model)))
            openvino.save_model(model, str(out / FILE), compress_to_fp16=self.compress_to_fp16)
        except Exception as error:  # noqa: BLE001 - OpenVINO's frontends raise many types
            rules = NO_RULE.search(str(error))
            if rules:
                raise ConversionError(
                    f"formats.openvino: OpenVINO's TensorFlow frontend has no conversion for {rules.group(1).strip()} "
                    f"(string ops, lookup tables and other libraries' ops need OpenVINO extensions such as "
                    f"openvino-tokenizers); leave openvino out for this model"
                ) from error
            raise unsupported("openvino", error, KNOWN) from error

    def runner(self, directory: Path) -> Runner:
        import openvino

        # the CPU plugin's own default runs bf16 where the CPU has it (AMX, AVX512-BF16): the
        # precision is stated, so the artifact is verified as it will be run
        compiled = openvino.Core().compile_model(
            str(directory / FILE), "CPU", {"INFERENCE_PRECISION_HINT": self.inference_precision}
        )

        def run(key: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            feed = {port.get_any_name(): inputs[port.get_any_name()] for port in compiled.inputs}
            result = compiled(feed)
            return {port.get_any_name(): np.asarray(result[port]) for port in compiled.outputs}

        return run
