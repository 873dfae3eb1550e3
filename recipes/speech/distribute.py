"""tf.distribute for the recipes: one flag, three strategies.

- default: one device (the CPU, or the first GPU);
- mirrored: every GPU of this machine (or its CPU), synchronous replicas;
- multiworker: several machines; each process reads TF_CONFIG as TensorFlow
  documents it, and only the chief writes the run directory (the others
  write to a temporary directory, which TensorFlow's guides also do).

The global batch size stays the recipe's, split across replicas, so the
learning rate needs no scaling and a distributed run takes the same
optimizer steps as a single-device one.
"""
import json
import os
import tempfile

from tfdiff import keras  # noqa: F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name):
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}. Received: {name!r}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs TF_CONFIG (see the README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief():
    """True unless TF_CONFIG names this process a non-chief worker."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in config.get("cluster", {})


def output_dir(out, strategy_name):
    """Where this process writes: `out` for the chief, a temporary directory otherwise."""
    if strategy_name == "multiworker" and not is_chief():
        return tempfile.mkdtemp(prefix="tfdiff-worker-")
    return out


def shard_by_data(dataset):
    """Workers read disjoint slices of an in-memory dataset (there are no files to shard)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
