"""The reference's and ultralytics' formats: checkpoints read safely, weights in their layout, model YAMLs."""
