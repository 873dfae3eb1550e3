"""Speech code shared by the recipes: synthesis, features, training, the flywheel, reports."""
