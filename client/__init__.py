"""The reference client: a typed async SDK over the generated stubs (`client.sdk`) and the CLIs that players,
game clients and build pipelines run (`python -m client ...`, see `client/__main__.py`)."""
