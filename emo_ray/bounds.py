"""The valid range of a config number, carried by its field's type instead of a hand-written check:

    max_steps: Annotated[int, Bounds(gt=0)] = 50
    dropout: Annotated[float, Bounds(ge=0, lt=1)] = 0.05

``emo_ray.typed_config`` checks it wherever a config is built (a YAML file, ``key=value``
overrides, a worker's flat dict) and the error names the field, the bound and the value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    """``ge`` / ``gt``: the inclusive / exclusive lower end, ``le`` / ``lt`` the upper (None: no
    end). A bounded number is finite. ``note`` says what a boundary value means (``"0: only at the
    end"``) and is printed with the error."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    note: str = ""

    def contains(self, x: float) -> bool:
        return (math.isfinite(x) and (self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))

    def describe(self, integer: bool) -> str:
        """What the error says a value must do: ``be positive``, ``be at least 1``, ``be 0-3``, ``lie
        in [0, 1)``, ``be >= 0 (0 = all)``; a float's lower bound also says it must be finite."""
        lo = self.ge if self.ge is not None else self.gt
        hi = self.le if self.le is not None else self.lt
        if lo is not None and hi is not None:
            if integer and self.ge is not None and self.le is not None:
                text = f"be {lo:g}-{hi:g}"
            else:
                left, right = "[" if self.ge is not None else "(", "]" if self.le is not None else ")"
                text = f"lie in {left}{lo:g}, {hi:g}{right}"
        elif hi is not None:
            text = f"be <= {hi:g}" if self.le is not None else f"be < {hi:g}"
        elif self.gt == 0:
            text = "be positive" if integer else "be a finite positive number"
        elif self.gt is not None:
            text = f"be > {self.gt:g}"
        elif integer:
            text = f"be at least {self.ge:g}" if self.ge > 0 else f"be >= {self.ge:g}"
        else:
            text = f"be finite and >= {self.ge:g}"
        return text + (f" ({self.note})" if self.note else "")
