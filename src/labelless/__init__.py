"""labelless: label-free adaptation of CLIP-like models to image classification.

Importing the package registers every backbone source, data set, text source, view, scorer and
method, so registry lookups never depend on a remembered import.
"""

from labelless import (  # noqa: F401  (registration)
    backbones,
    data,
    methods,  # noqa: F401  (registration; imports the above)
    scoring,
    text,
    tuners,
    views,
)
from labelless.data import testbed as _testbed  # noqa: F401  (testbed data/backbone/texts)

__version__ = "0.1.0"
