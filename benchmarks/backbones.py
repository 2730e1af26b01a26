"""`python benchmarks/backbones.py [OPTIONS]`: the same as `ecgedge bench backbones [OPTIONS]` (logic in convert/bench_backbones.py)."""

from ecgedge.convert.bench import bench

if __name__ == "__main__":
    bench.commands["backbones"](prog_name="python benchmarks/backbones.py")
