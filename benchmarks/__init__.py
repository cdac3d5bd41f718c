"""Benchmarks that run only from a checkout: they start real servers with the test suite's helpers
(tests/support), which the shipped package and the image do not contain (`sam2plus.bench` runs
anywhere SAM2Plus is installed)."""
