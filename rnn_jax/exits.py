"""How every entry point refuses its input (docs/design.md, "Exit codes").

A setting to fix -- a config key, value or variant, a flag value the program refuses, a data
file, a workdir, positional arguments the program does not take -- is one line on stderr and
exit status `REFUSED`; absl's own flag-parse errors (an unknown flag, a value a flag's parser
rejects, a required flag left out) stay absl's, exit status 1, as does a run that fails or is
stopped by a signal. The experiments (`rnn_jax.train.cli`), `launch.sweep`, `launch.report`,
`experiments.reproduce`, `experiments.significance` and `experiments.throughput_report` all
refuse through `refuse`. Imports nothing heavy: `launch.report` does not load JAX.
"""

from __future__ import annotations

import sys
from typing import NoReturn

REFUSED = 2


def refuse(message: str, program: str | None = None) -> NoReturn:
    """Write `program: message` (`message` alone without a program) and a newline to stderr,
    then exit with status `REFUSED` (SystemExit, whose `code` is `REFUSED`)."""
    sys.stderr.write(f"{program}: {message}\n" if program else f"{message}\n")
    sys.exit(REFUSED)
