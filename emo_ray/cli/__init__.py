"""The ``emo-ray`` command line (usage: ``emo_ray/cli/parser.py``, or ``emo-ray --help``).

One module per group of commands, below a small dispatcher:

* ``parser``: the one grammar (a typed YAML config plus ``key=value`` overrides) of every command;
* ``run``: train, eval, sweep, sample-corpus (the commands that start Ray, MLflow or a model);
* ``store``: aggregate, report, rescore (the commands that read an MLflow store);
* ``listing``: show-config and ls (the commands that only print);
* ``help``: each command's ``--help`` field list, read from its config's dataclasses;
* ``dispatch``: ``main``, which runs a command and turns each failure into one line and an exit code.
"""
from emo_ray.cli.common import EXIT_CONFIG, UsageError, load
from emo_ray.cli.dispatch import COMMANDS, EXIT_DIVERGED, EXIT_INTERRUPTED, main
from emo_ray.cli.parser import build_parser

__all__ = ["COMMANDS", "EXIT_CONFIG", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "UsageError", "build_parser", "load", "main"]
