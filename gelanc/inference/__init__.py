"""Inference: NMS and the letterbox undone, prediction, the fastest configuration measured."""
