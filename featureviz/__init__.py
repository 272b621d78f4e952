"""featureviz: see what a convolutional network has learned."""

__version__ = "0.1.0"
