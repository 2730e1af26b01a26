"""`python benchmarks/robustness.py [OPTIONS]`: the same as `ecgedge bench robustness [OPTIONS]` (logic in convert/bench_robustness.py)."""

from ecgedge.convert.bench import bench

if __name__ == "__main__":
    bench.commands["robustness"](prog_name="python benchmarks/robustness.py")
