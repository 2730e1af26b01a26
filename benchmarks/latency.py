"""`python benchmarks/latency.py [OPTIONS]`: the same as `ecgedge bench latency [OPTIONS]` (logic in convert/bench_latency.py)."""

from ecgedge.convert.bench import bench

if __name__ == "__main__":
    bench.commands["latency"](prog_name="python benchmarks/latency.py")
