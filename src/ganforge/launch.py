"""`ganforge train --nproc N` starts its processes through this: torchrun, with its outcome in one line.

torchrun itself ends a stopped job (Ctrl-C, SIGTERM) with a `SignalException` traceback and
a failed one with a `ChildFailedError` block, even when every worker has already said what
happened (the "stopped at step N" line, a one-line error). Here the same launch ends with
the workers' exit code and at most one line: 130 when the job was stopped and its step saved,
the failing process's own code otherwise, 128 + N when a process was killed by signal N.

    python -m ganforge.launch --standalone --nproc_per_node 2 -m ganforge train ...
"""

from __future__ import annotations

import signal
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

STOPPED = 130  # what `ganforge train` exits with when a stop request ended it after saving


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except SignalException:
        # The launcher passed the signal on to the workers and waited for them: they stopped
        # together at one step, which rank 0 saved (or, past torchrun's shutdown timeout, were killed).
        return STOPPED
    except ChildFailedError as error:
        killed = {rank: f.exitcode for rank, f in error.failures.items() if f.exitcode < 0}
        if killed:  # the cause; its peers then fail on the lost connection
            rank = min(killed)
            name = signal.Signals(-killed[rank]).name
            print(f"ganforge: error: process {rank} was killed by {name}; the same command resumes from the last checkpoint", file=sys.stderr)
            return 128 - killed[rank]
        rank, failure = error.get_first_failure()
        if failure.exitcode != STOPPED:  # a worker's own error line is above
            print(f"ganforge: error: process {rank} failed with exit code {failure.exitcode}", file=sys.stderr)
        return failure.exitcode
    return 0


if __name__ == "__main__":
    sys.exit(main())
