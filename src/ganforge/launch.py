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

from ganforge.errors import DistributedFailure

STOPPED = 130  # what `ganforge train` exits with when a stop request ended it after saving
LOST_CONTACT = DistributedFailure.exit_code  # what a process exits with when another one of the job is gone


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except SignalException:
        # The launcher passed the signal on to the workers and waited for them: they stopped
        # together at one step, which rank 0 saved (or, past torchrun's shutdown timeout, were killed).
        return STOPPED
    except ChildFailedError as error:
        rank, failure = _cause(error.failures)
        if failure.exitcode < 0:
            name = signal.Signals(-failure.exitcode).name
            print(f"ganforge: error: process {rank} was killed by {name}; the same command resumes from the last checkpoint", file=sys.stderr)
            return 128 - failure.exitcode
        if failure.exitcode != STOPPED:  # the process's own error line is above
            print(f"ganforge: error: process {rank} failed with exit code {failure.exitcode}", file=sys.stderr)
        return failure.exitcode
    return 0


def _cause(failures: dict) -> tuple[int, object]:
    """The failure that caused the others: a process killed by a signal other than SIGTERM (torchrun
    ends the survivors of a failure with SIGTERM), else the earliest error of a process's own, before
    a lost connection (exit code 4, what its peers report when one process is gone), before a stop
    with its step saved (130), before SIGTERM."""

    def rank_of(item) -> tuple:
        rank, failure = item
        code = failure.exitcode
        if code < 0:
            order = 4 if -code == signal.SIGTERM else 0
        else:
            order = {LOST_CONTACT: 2, STOPPED: 3}.get(code, 1)
        return order, failure.timestamp, rank

    return min(failures.items(), key=rank_of)


if __name__ == "__main__":
    sys.exit(main())
