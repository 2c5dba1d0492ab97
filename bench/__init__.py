"""ElasticCode benchmarks: ``python -m bench NAME [options]`` (see bench/README.md)."""
