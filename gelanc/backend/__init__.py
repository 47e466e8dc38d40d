"""The torch backend: the IR as a torch.fx module, its deploy with weights, checkpoints, export."""
