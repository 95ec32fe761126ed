"""The ahead-of-time slice (see conftest.py). A package, so that its conftest
imports as `aot.conftest` and never shadows tests/conftest.py, which the
other suites import as `conftest`."""
