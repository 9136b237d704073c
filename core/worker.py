"""``python -m core.worker JOB_DIR`` (or ``--self-check``): the worker process's entry point.

The code is ``core.jobs.worker``; this name is what the supervisor starts and what process listings
show, so a worker is recognisable as one."""
import sys

from core.jobs.worker import main

if __name__ == "__main__":
    sys.exit(main())
