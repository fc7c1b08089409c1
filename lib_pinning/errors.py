"""The one error family callers tell apart: bad input, found before anything is written or rendered.

Every check that can refuse a run raises an `InputError` (or a subclass) with one line naming what is wrong; the
command line answers it with exit code 2, the WebUI with HTTP 422. Anything else that goes wrong once a run has
started is a fault of the run and ends it as "failed" (lib_pinning.lifecycle).
"""


class InputError(ValueError):
    """Input a run cannot use; the message is one line that names the option, file or text at fault."""
