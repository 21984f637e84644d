"""The error of a setting a run cannot use."""


class RunSpecError(ValueError):
    """A setting the run cannot use: unknown key, wrong type, or a value outside its domain."""
