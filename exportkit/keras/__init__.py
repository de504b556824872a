"""Keras: the model sources, the train/eval steps, calling a model on named tensors, loading back."""
