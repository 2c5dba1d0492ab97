"""The seed's import paths (``pyfi.client.api``), kept so its examples run unchanged.

``pyfi`` itself is a namespace package (it has no ``__init__.py``): processors ship their
modules under ``pyfi.processors`` (the sample's is ``pyfi.processors.sample``), and both
import side by side in one interpreter.
"""
