"""Converters of raw downloads (or your own clips) into prepared datasets.

Each converter module declares the dataset it makes (see `data_prep.registry`);
`python -m data_prep --list` lists them and `python -m data_prep NAME ARGS` runs one.
"""

import pkgutil

# A `data_prep/` folder elsewhere on sys.path (without an __init__.py) adds its converter
# modules to this package: that is how a converter of your own joins the registry.
__path__ = pkgutil.extend_path(__path__, __name__)
