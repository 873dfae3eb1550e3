"""Recipes: the paper's two experiments, end to end (data, features, model,
train, export, evaluate, report). Shared speech code lives in recipes.speech."""
