"""Argument checks shared by the modules that validate user input (errors name the argument)."""
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
