"""``assets.extra/tf_serving_warmup_requests``: the requests TF Serving replays when it loads a version.

A TFRecord file of ``PredictionLog`` records (``tensorflow-serving-api``), at most 1000 (TF
Serving refuses more), one ``PredictRequest`` per case: model name, signature key and each
input as a ``TensorProto``. The bytes depend only on the cases and the model name, so a seeded
export writes the same file every time::

    cases = {("serving_default", 1): {"features": np.zeros((1, 8), np.float32)}}
    write(work_dir, cases, model_name="clf")     # -> 1
    replay(work_dir)                             # -> [(case 0's signature key, its outputs)]

``replay`` runs every record the way TF Serving's C++ loader does: the ``serve`` MetaGraphDef
loaded into a TF1 session, each request's inputs fed by the signature's tensor names, every
output (or the request's ``output_filter``) fetched.
"""

from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import numpy as np

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit on warmup records


class WarmupError(Exception):
    """A warmup record does not run against the export (raised by ``replay``)."""


def records(cases: Mapping[Tuple[str, int], Mapping[str, np.ndarray]], model_name: str) -> List[bytes]:
    """One serialized ``PredictionLog`` per (signature key, batch size) case, in order."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    out = []
    for (key, _), arrays in cases.items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = key
        for name in sorted(arrays):
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(arrays[name])))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        out.append(log.SerializeToString(deterministic=True))
    return out


def write(export_dir: Path, cases, model_name: str) -> int:
    """Write the warmup file into ``export_dir`` (the first 1000 cases); returns the record count."""
    import tensorflow as tf

    data = records(dict(list(cases.items())[:MAX_RECORDS]), model_name)
    path = Path(export_dir) / WARMUP
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in data:
            writer.write(record)
    return len(data)


def read(export_dir: Path):
    """The export's warmup records as ``PredictionLog``s (TF's reader: each record's CRC is checked)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(export_dir) / WARMUP
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in tf.data.TFRecordDataset(str(path))
    ]


def replay(export_dir: Path) -> List[Tuple[str, Dict[str, np.ndarray]]]:
    """Run every warmup record through the TF1 session loader; (signature key, outputs) per record.

    Raises ``WarmupError`` naming the record that does not run, as TF Serving would refuse the load.
    """
    import tensorflow as tf

    logs = read(export_dir)
    if len(logs) > MAX_RECORDS:
        raise WarmupError(f"{len(logs)} warmup records; TF Serving loads at most {MAX_RECORDS}")
    results = []
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], str(export_dir))
        for index, log in enumerate(logs):
            if log.WhichOneof("log_type") != "predict_log":
                raise WarmupError(f"warmup record {index} is a {log.WhichOneof('log_type')}, not a predict_log")
            request = log.predict_log.request
            key = request.model_spec.signature_name or "serving_default"
            where = f"warmup record {index} ({key})"
            if key not in meta.signature_def:
                raise WarmupError(f"{where}: the serve graph has no signature {key!r}")
            signature = meta.signature_def[key]
            if set(request.inputs) != set(signature.inputs):
                raise WarmupError(
                    f"{where}: inputs {sorted(request.inputs)} != the signature's {sorted(signature.inputs)}"
                )
            names = list(request.output_filter) or sorted(signature.outputs)
            try:
                feed = {signature.inputs[k].name: tf.make_ndarray(v) for k, v in request.inputs.items()}
                values = sess.run([signature.outputs[n].name for n in names], feed)
            except (tf.errors.OpError, KeyError, ValueError, TypeError) as error:
                raise WarmupError(f"{where} does not run: {str(error).strip().splitlines()[0]}") from error
            results.append((key, dict(zip(names, values))))
    return results
