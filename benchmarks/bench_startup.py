"""Start-up of the profiler until the first face can be scored: without, with a cold and with a warm text cache.

What `demoprof profile` pays before its first frame: loading the checkpoint (through load_model, as in
production) and encoding the caption ensembles of every attribute plus the full descriptions (441 prompts with
the built-in prompt set). The text cache (core/text_cache.py) replaces the encoding by one file read; "cold"
is a fresh cache folder (hash the weights file, encode, write), "warm" the same folder again. Runs are
interleaved (none, cold, warm, none, ...) so that the machine's noise hits the three alike.

    .venv/bin/python benchmarks/bench_startup.py --arch tiny-64 --runs 5
    .venv/bin/python benchmarks/bench_startup.py --arch ViT-B-16-quickgelu --runs 3 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import (RANDOM_WEIGHTS_NOTE, command_line, machine_info, machine_line, markdown_table,
                     random_checkpoint, set_threads, summary, timed, write_json)


def start(checkpoint: Path, cache_dir: str | None, args) -> tuple[float, float, int]:
    """(load seconds, text seconds, prompts encoded) of one fresh profiler."""
    from demoprof_ros.core.profiler import Profiler, ProfilerConfig
    from demoprof_ros.core.taxonomy import CLASSES

    cfg = ProfilerConfig(model=str(checkpoint), device=args.device, dtype=args.dtype, detectors=("haar",))
    load_s, profiler = timed(lambda: Profiler.from_config(cfg, text_cache_dir=cache_dir))
    scorer = profiler.scorer

    def text():
        heads = scorer.heads
        return heads, scorer.joint_head

    text_s, _ = timed(text)
    cache = scorer.text_cache
    prompts = sum(len(scorer.prompts.class_prompts(a, c)) for a in scorer.heads for c in CLASSES[a])
    prompts += sum(len(scorer.prompts.description_prompts(d)) for d in scorer.descriptions)
    if cache is not None and cache_dir is not None:
        assert cache.hits + cache.misses == 4
    return load_s, text_s, prompts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny-64", help="architecture with random weights (e.g. ViT-B-16-quickgelu)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--work", help="folder for the random checkpoint (default: a temporary one)")
    parser.add_argument("--out", help="write every number as JSON here")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        checkpoint = random_checkpoint(args.arch, work / f"random-{args.arch}")
        warm_dir = str(work / "text-warm")
        start(checkpoint, warm_dir, args)  # fill the warm cache (and the OS file cache) once
        times: dict[str, list[tuple[float, float]]] = {"no cache": [], "cold cache": [], "warm cache": []}
        prompts = 0
        for run in range(args.runs):
            for name in times:
                cache_dir = None if name == "no cache" else warm_dir if name == "warm cache" \
                    else str(work / f"text-cold-{run}")
                load_s, text_s, prompts = start(checkpoint, cache_dir, args)
                times[name].append((load_s, text_s))
    rows, records = [], {}
    for name, values in times.items():
        load, text = summary([v[0] for v in values]), summary([v[1] for v in values])
        total = summary([v[0] + v[1] for v in values])
        records[name] = {"load": load, "text": text, "total": total}
        rows.append([name, f"{load['median_ms']:.0f}", f"{text['median_ms']:.0f}", f"{total['median_ms']:.0f}",
                     f"{total['p95_ms']:.0f}"])
    machine = machine_info(args.device)
    print(f"# start-up of {args.arch} ({prompts} prompts), {args.runs} interleaved runs; {machine_line(machine)}")
    print(RANDOM_WEIGHTS_NOTE)
    header = ["text cache", "load ms (median)", "prompts ms (median)", "total ms (median)", "total ms (p95)"]
    print(markdown_table(header, rows))
    write_json(args.out, {"arch": args.arch, "prompts": prompts, "runs": args.runs, "results": records,
                          "machine": machine, "command": command_line()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
