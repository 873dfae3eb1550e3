"""Text commands: a KerasHub transformer (Keras 3) that gains a domain per generation, updated by a diff."""
