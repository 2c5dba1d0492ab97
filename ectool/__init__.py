"""ElasticCode: shell-native, durable, distributed compute.

Importing this package is cheap on purpose: the CLI's startup time depends on it.
"""

__version__ = "0.1.0"
