"""`python -m harness.workloads workload=NAME ...`: describe a workload without running it
(the same command as `python -m workloads`)."""

import sys

from workloads.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
