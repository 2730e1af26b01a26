"""`python benchmarks/accuracy.py [OPTIONS]`: the same as `ecgedge bench accuracy [OPTIONS]` (logic in convert/bench_accuracy.py)."""

from ecgedge.convert.bench import bench

if __name__ == "__main__":
    bench.commands["accuracy"](prog_name="python benchmarks/accuracy.py")
