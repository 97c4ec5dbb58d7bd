"""The CLI commands of `python -m client`: one module per command group, each with `register(subparsers)`."""
