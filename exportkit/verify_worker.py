"""Runs in a fresh process for the verify stage: it has the export and the custom objects'
modules, nothing else of the exporting process. Loads the ``serve`` graph, runs each case."""
import argparse
import importlib

import numpy as np

SEP = "::"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("saved_model")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--device", default="/CPU:0")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    args = parser.parse_args()
    for module in args.imports:
        importlib.import_module(module)
    import tensorflow as tf

    loaded = tf.saved_model.load(args.saved_model, tags=["serve"])
    cases = {}
    with np.load(args.inputs) as data:
        for flat, array in data.items():
            key, size, name = flat.split(SEP)
            cases.setdefault((key, size), {})[name] = array
    results = {}
    with tf.device(args.device):
        for (key, size), arrays in cases.items():
            outputs = loaded.signatures[key](**{n: tf.constant(a) for n, a in arrays.items()})
            for name, value in outputs.items():
                results[f"{key}{SEP}{size}{SEP}{name}"] = value.numpy()
    np.savez(args.outputs, **results)


if __name__ == "__main__":
    main()
