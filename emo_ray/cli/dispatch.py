"""``emo-ray COMMAND``: parse, run the command, and turn each kind of failure into one line on
stderr and its exit code."""
from __future__ import annotations

import os
import sys

from emo_ray.cli.common import EXIT_CONFIG, UsageError
from emo_ray.cli.listing import cmd_ls, cmd_show_config
from emo_ray.cli.parser import build_parser
from emo_ray.cli.run import cmd_eval, cmd_sample_corpus, cmd_sweep, cmd_train
from emo_ray.cli.store import cmd_aggregate, cmd_report, cmd_rescore

COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sweep": cmd_sweep, "aggregate": cmd_aggregate,
            "report": cmd_report, "rescore": cmd_rescore, "sample-corpus": cmd_sample_corpus,
            "show-config": cmd_show_config, "ls": cmd_ls}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "losses":
        args.command, args.what = "ls", "losses"
    if getattr(args, "verbose", False):
        os.environ["EMO_RAY_VERBOSE"] = "1"  # read by the driver and forwarded to every Ray worker
    if args.command in ("train", "eval", "sweep", "aggregate", "report", "rescore", "sample-corpus"):
        from emo_ray import console

        console.prepare_process_env()  # library chatter down (MLflow, Ray, DeepSpeed) unless -v
    from emo_ray.config import ConfigError
    from emo_ray.storage import StorageFault

    early = (ConfigError, UsageError)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as e:
        # Ctrl-C: the run ended KILLED; one line says where it stood and what a rerun resumes.
        print(f"emo-ray {args.command}: {_one_line(e) or INTERRUPTED.get(args.command, 'interrupted')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except early as e:
        what = "config error" if isinstance(e, ConfigError) else "error"
        print(f"emo-ray {args.command}: {what}: {_one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageFault as e:  # a checkpoint the storage refused mid-run: the run is FAILED, tagged
        print(f"emo-ray {args.command}: storage error: {_one_line(e)}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError) as e:
        # Missing data, model weights or sweep state: found in pre-flight, before any process.
        print(f"emo-ray {args.command}: {_one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as e:
        from emo_ray.data import DataError

        if isinstance(e, DataError):
            print(f"emo-ray {args.command}: data error: {_one_line(e)}", file=sys.stderr)
            return EXIT_CONFIG
        diverged = _diverged(e)
        if diverged:
            # Reaches the driver wrapped in Ray's worker-group error: the run is FAILED in MLflow
            # and nothing was exported; one line is all the user needs.
            context = getattr(e, "emo_ray_context", "")  # the MLflow run and ray.run_name
            print(f"emo-ray {args.command}: {diverged}" + (f" ({context})" if context else ""), file=sys.stderr)
            return EXIT_DIVERGED
        raise


EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by SIGINT (128 + 2)
# The line of a Ctrl-C that carries no message of its own (train and eval raise theirs).
INTERRUPTED = {"train": "interrupted; the same command again (with the same ray.run_name) resumes or starts it",
               "sweep": "interrupted; the same command with --resume continues the sweep (finished trials are kept)"}


def _diverged(e: BaseException) -> str | None:
    """The ``TrainingDiverged: ...`` line of an error raised in a training worker, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for line in str(e).splitlines():
            if "TrainingDiverged:" in line:
                return line[line.rindex("TrainingDiverged:"):].strip()
        e = e.__cause__ or e.__context__
    return None
