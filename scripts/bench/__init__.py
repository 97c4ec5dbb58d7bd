"""The benchmark harness behind `make bench` (SPEC §10); entry point `python -m scripts.bench`."""
