"""Benchmarks: run as modules, e.g. ``python -m bench.codec_bench``."""
