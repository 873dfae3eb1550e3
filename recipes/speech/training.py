"""Training helpers shared by the recipes: one trainer for losses that are not
(y_true, y_pred) functions, the paper's hold-and-decay learning rate, and a
progress bar for `fit`."""
from tfdiff import keras
import tensorflow as tf
from tqdm import tqdm


class Trainer(keras.Model):
    """Trains `model` with `fit`, for a loss computed from the whole batch (`loss_of`).

    The step is the same in every recipe: the loss under a tape, divided by
    the replica count (tf.distribute sums the replicas' gradients, so each
    contributes its share of the mean), applied to `model`'s trainable
    variables: for a tfdiff model, only the diffs. Subclasses define
    `loss_of(data)`, the batch's scalar loss.
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.trained = model

    def call(self, inputs, training=None):
        return self.trained(inputs, training=training)

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self.loss_of(data)
            scaled = loss / replicas
        variables = self.trained.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {"loss": loss}


@keras.utils.register_keras_serializable(package="recipes")
class HoldDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Holds `learning_rate` for `hold_steps`, then decays it exponentially to
    `learning_rate * final_scale` at `total_steps`.

    Example:

    >>> schedule = HoldDecay(1e-3, hold_steps=10, total_steps=20, final_scale=0.1)
    >>> round(float(schedule(20)), 6)
    0.0001
    """

    def __init__(self, learning_rate, hold_steps, total_steps, final_scale=0.1):
        if not 0 <= hold_steps < total_steps:
            raise ValueError(f"need 0 <= hold_steps < total_steps. Received: hold_steps={hold_steps}, "
                             f"total_steps={total_steps}")
        self.learning_rate, self.hold_steps = float(learning_rate), int(hold_steps)
        self.total_steps, self.final_scale = int(total_steps), float(final_scale)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        progress = tf.clip_by_value((step - self.hold_steps) / (self.total_steps - self.hold_steps), 0.0, 1.0)
        return self.learning_rate * tf.pow(self.final_scale, progress)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "hold_steps": self.hold_steps,
                "total_steps": self.total_steps, "final_scale": self.final_scale}


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar over the steps of one `fit` call, showing the loss."""

    def __init__(self, total, description):
        super().__init__()
        self.total, self.description = total, description

    def on_train_begin(self, logs=None):
        self.bar = tqdm(total=self.total, desc=self.description, unit="step", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_train_end(self, logs=None):
        self.bar.close()
