"""Deployment formats converted from the export's SavedModel, each verified with its own runtime:
LiteRT (``litert``), ONNX (``onnx``), OpenVINO (``openvino``). See ``exportkit.formats.base``."""
