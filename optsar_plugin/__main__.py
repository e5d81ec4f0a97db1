import sys

from .cli import main

# The guard matters: Dask's LocalCluster starts its workers with multiprocessing's "spawn", which
# imports the main module of the parent again (as __mp_main__) in every worker process.
if __name__ == "__main__":
    sys.exit(main())
