"""``python -m emo_ray.cli ...``: the same as the ``emo-ray`` console script."""
import sys

from emo_ray.cli.dispatch import main

sys.exit(main())
