"""python -m recipes.fsc.study RUN_DIR {curve,diff}: the BL convergence curve and the diff
training study of the spoken-command recipe (recipes/speech/study.py)."""
from recipes.speech import study

from .run import SCALES, load_task, prepare

if __name__ == "__main__":
    study.main(prepare, load_task, SCALES, "python -m recipes.fsc.study")
