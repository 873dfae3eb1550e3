"""python -m recipes.librispeech.evaluate RUN_DIR [--data DIR]: the run's models again (recipes/speech/evaluate.py)."""
from recipes.speech import evaluate

from .run import RECIPE

if __name__ == "__main__":
    evaluate.main(RECIPE, "python -m recipes.librispeech.evaluate")
