"""``python -m ecgedge.benchmarks NAME [OPTIONS]``: the same as ``ecgedge bench NAME [OPTIONS]``."""

from ecgedge.benchmarks.cli import bench

if __name__ == "__main__":
    bench(prog_name="python -m ecgedge.benchmarks")
