"""The one training loop, evaluation, checkpoints, pseudo labels and the events they emit."""
