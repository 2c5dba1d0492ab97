"""``from pyfi.client.api import parallel, pipeline, funnel``: :mod:`ectool.api` under the
seed's name (the same objects)."""

from ectool.api import *  # noqa: F403 - a re-export
from ectool.api import __all__  # noqa: F401
