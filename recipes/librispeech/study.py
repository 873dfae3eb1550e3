"""python -m recipes.librispeech.study RUN_DIR {curve,diff}: the BL convergence curve and the diff
training study of the RNN-T recipe (recipes/speech/study.py)."""
from recipes.speech import study
from recipes.speech.recipe import load_task

from .run import SCALES, prepare

if __name__ == "__main__":
    study.main(prepare, lambda run_dir: load_task(prepare, run_dir), SCALES, "python -m recipes.librispeech.study")
