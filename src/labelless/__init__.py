"""labelless: label-free adaptation of CLIP-like models to image classification.

Importing the package registers every backbone source, data set, text source, view, scorer and
method, so registry lookups never depend on a remembered import.
"""

# registration (methods imports the others itself, so the order does not matter)
from labelless import backbones, data, methods, scoring, text, tuners, views  # noqa: F401
from labelless.data import testbed as _testbed  # noqa: F401  (testbed data/backbone/texts)
from labelless.eval import estimators as _estimators  # noqa: F401  (label-free accuracy estimators)

__version__ = "0.1.0"
