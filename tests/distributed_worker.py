"""A worker for tests/test_distributed.py: trains a small sparse diff under a
tf.distribute strategy and saves the extracted diff.

    python tests/distributed_worker.py {default,mirrored,multiworker} OUT.tfdiff
    python tests/distributed_worker.py {fsc,librispeech}-mirrored RUN_DIR

TF_CONFIG (multiworker) is read by TensorFlow itself. The global batch is
the same for every strategy, so all runs take the same optimizer steps.
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 16
RECIPES = {"fsc-mirrored": "recipes.fsc.run", "librispeech-mirrored": "recipes.librispeech.run"}


def main(kind, out):
    if kind in RECIPES:  # a recipe's tiny flywheel on two CPU replicas
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import importlib
        recipe = importlib.import_module(RECIPES[kind])
        # FSC's run takes every diff method, the post-hoc baselines and BL as teacher: one run checks them all.
        every = ["--set", 'flywheel.methods=["sparse", "hash", "sparse-global", "lowrank", "seed"]',
                 'flywheel.posthoc=["topk"]', "flywheel.teacher_weight=0.5"] if kind == "fsc-mirrored" else []
        return recipe.main(["--synthetic", "--scale", "tiny", "--out", out, "--strategy", "mirrored", *every])
    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tfdiff
    from tfdiff import keras

    strategy = {"default": tf.distribute.get_strategy,
                "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                "multiworker": tf.distribute.MultiWorkerMirroredStrategy}[kind]()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 12)).astype("float32")
    y = rng.normal(size=(128, 4)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        base = keras.Sequential([keras.Input((12,)), keras.layers.Dense(64, activation="tanh", name="hidden"),
                                 keras.layers.Dense(4, name="out")])
        diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=10.0, begin_step=0, end_step=12,
                                                         frequency=2))
        diff_model.compile(keras.optimizers.SGD(0.05), "mse")
    diff_model.fit(data, epochs=1, steps_per_epoch=16, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    tfdiff.extract(diff_model, generation=1).save(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
