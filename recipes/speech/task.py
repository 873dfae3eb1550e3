"""What the flywheel asks of a task: the one interface a new recipe implements.

`recipes.fsc.run.SluTask` and `recipes.librispeech.run.LibriTask` implement
it; the README ("Your own task") shows a 30-line one. The flywheel owns the
generations, the baselines, the diffs, conversion, the device apply and the
results; the task owns data, model, training and measurement.
"""
import json
import os
import shutil
from typing import Any, Dict, List, Protocol, Tuple


class Task(Protocol):
    """A model family trained on data that grows with each generation.

    Optional methods, which the flywheel looks for:

    - `convert(model, path)`: write the model's .tflite when it needs more
      than `device.convert(model, path)` (several signatures, for example);
    - `robustness(model, gen) -> {field: value}`: extra measurements on data
      no training saw (the FSC task: voices of an unseen synthesizer);
    - `splits`, `validate(model, gen) -> {"valid_<metric>": value, ...}`: the
      held-out splits `evaluate(model, gen, split)` accepts, and the valid
      measurements every row records (what studies choose settings by);
    - `scores(model, gen)` and `groups(gen)`: the test metric per utterance
      ([n], or [n, 2] for a ratio such as WER, recipes/speech/intervals.py)
      and each utterance's speaker, for the rows' 95 % intervals; then
      `evaluate_tflite` also returns the scores, under "scores".
    """

    name: str  # the task's name in results.json
    metric: str  # "accuracy" (higher is better) or "wer" (lower is better)

    def describe(self, gen: int) -> Dict[str, Any]:
        """JSON-able facts of generation `gen`'s data (its domains, its hours)."""

    def new_model(self, gen: int) -> Any:
        """A fresh, untrained tf_keras model for generation `gen`."""

    def train(self, model: Any, gen: int, steps: int, callbacks: List[Any], label: str,
              learning_rate: float = None) -> None:
        """Train `model` on generation `gen`'s data for `steps` steps, passing `callbacks` to fit.

        A task that can learn from a teacher (the flywheel's `teacher_weight`)
        also takes `teacher` (a model of the same generation) and
        `teacher_weight` (the share of the loss spent matching it), and says
        so with `distills = True`.
        """

    def evaluate(self, model: Any, gen: int) -> float:
        """The metric of a Keras model on generation `gen`'s test data."""

    def evaluate_tflite(self, path: str, gen: int) -> Tuple[float, Dict[str, Any]]:
        """The metric of a .tflite model, run with LiteRT, and more row fields (latency_ms, rtf, ...)."""


def load_task(prepare, run_dir, data_dir=None):
    """The task of a finished run, to evaluate its models again: on the run's corpus, or on `data_dir`.

    Another corpus is prepared in RUN_DIR/evaluate/<its name>, with the
    run's settings and the run's vocabulary, so the models see their own tokens.
    """
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    if data_dir is None:
        return prepare(run_dir, data_dir=saved["data"], scale=saved["scale"], seed=saved["seed"],
                       settings=saved["settings"])
    work = os.path.join(run_dir, "evaluate", os.path.basename(os.path.normpath(data_dir)))
    os.makedirs(work, exist_ok=True)
    shutil.copyfile(os.path.join(run_dir, "vocab.txt"), os.path.join(work, "vocab.txt"))
    return prepare(work, data_dir=data_dir, scale=saved["scale"], seed=saved["seed"], settings=saved["settings"])
