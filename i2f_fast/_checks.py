"""Argument checks shared by the modules that validate user input (errors name the argument)."""
import math
import operator


def positive_int(value, argument: str) -> int:
    """``value`` as an int ≥ 1 (anything with ``__index__`` but bool), or ValueError naming ``argument``."""
    try:
        size = operator.index(value)
    except TypeError:
        size = 0
    if isinstance(value, bool) or size < 1:
        raise ValueError(f"{argument} must be a positive int, got {value!r}")
    return size


def nonnegative_float(value, argument: str) -> float:
    """``value`` as a finite float ≥ 0 (an int or float, not bool), or ValueError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{argument} must be a finite number >= 0, got {value!r}")
    return float(value)
