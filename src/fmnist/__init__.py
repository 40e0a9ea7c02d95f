"""fmnist: train, understand and serve image classifiers on Fashion-MNIST."""

__version__ = "0.1.0"
