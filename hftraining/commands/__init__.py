"""The commands layer: what each `hftrain` command does between parsing and the library.

`cli.py` parses the command line and calls one function here with typed arguments. A command
builds the config (`common.ConfigOptions`), calls library functions (which compute and write files
but never print), then prints the tables and emits the `--json` summary. Library modules never
import this package or `cli`; `tests/test_layers.py` enforces it.
"""
