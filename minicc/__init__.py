"""Mini Constitutional Classifier: shared library for the DVC pipeline stages."""
