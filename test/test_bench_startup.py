"""benchmarks/bench_startup.py at its smoke setting: it runs, and its records hold what the README quotes."""
from test_benchmarks import run_script


def test_bench_startup_smoke(tmp_path):
    stdout, result = run_script("bench_startup.py", ["--arch", "tiny-64", "--runs", "1", "--threads", "1"], tmp_path)
    assert "| warm cache |" in stdout and result["prompts"] == 441
    assert set(result["results"]) == {"no cache", "cold cache", "warm cache"}
    for record in result["results"].values():
        assert record["total"]["n"] == 1 and record["text"]["median_ms"] >= 0
