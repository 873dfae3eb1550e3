"""python -m recipes.fsc.study RUN_DIR {curve,diff}: the BL convergence curve and the diff
training study of the spoken-command recipe (recipes/speech/study.py)."""
from recipes.speech import study

from .run import RECIPE

if __name__ == "__main__":
    study.main(RECIPE, "python -m recipes.fsc.study")
