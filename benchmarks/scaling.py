"""`python benchmarks/scaling.py [OPTIONS]`: the same as `ecgedge bench scaling [OPTIONS]` (logic in convert/bench_scaling.py)."""

from ecgedge.convert.bench import bench

if __name__ == "__main__":
    bench.commands["scaling"](prog_name="python benchmarks/scaling.py")
