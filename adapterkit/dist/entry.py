"""`python -m adapterkit.dist.entry ARGS`: the adapterkit CLI as a torchrun worker entry point.

`record` writes an uncaught exception to torchrun's error file, so the launcher can say which
rank failed and why."""
from torch.distributed.elastic.multiprocessing.errors import record

from adapterkit.cli import main

if __name__ == "__main__":
    record(main)()
