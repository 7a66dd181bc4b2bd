"""Loading speed and peak memory of the data loaders on the shared real data (raw archives -> Dataset).

    python benchmarks/load_data.py --data_dir ../shared/data

Each loader runs in its own fresh process so that its peak resident memory is its own.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

LOADERS = {
    "physionet2012": ("physionet2012", "load_physionet2012"),
    "physionet2019": ("physionet2019", "load_physionet2019"),
    "mimic3_demo": ("mimic3_demo/mimic3-benchmarks-root-demo.tar.gz", "load_mimic3_benchmark_root"),
}


def measure(source: str, data_dir: Path) -> dict:
    """Runs in the child process: load once, report time, sizes and peak memory."""
    import medfuse_hf.data as data

    relative_path, function = LOADERS[source]
    start = time.perf_counter()
    dataset, summary = getattr(data, function)(data_dir / relative_path, return_summary=True)
    seconds = time.perf_counter() - start
    return {
        "source": source,
        "seconds": seconds,
        "patients": len(dataset),
        "events": summary.events_kept,
        "patients_per_second": len(dataset) / seconds,
        "events_per_second": summary.events_kept / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--child", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.data_dir)))
        return
    results = []
    for source in LOADERS:
        output = subprocess.run(
            [sys.executable, __file__, "--data_dir", str(args.data_dir), "--child", source],
            check=True, capture_output=True, text=True,
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        results.append(result)
        print(f"{source:>14}: {result['patients']:>6,} patients, {result['events']:>10,} events "
              f"in {result['seconds']:6.1f} s "
              f"({result['patients_per_second']:,.0f} patients/s, {result['events_per_second']:,.0f} events/s), "
              f"peak RSS {result['peak_rss_mib']:,.0f} MiB")
    out = Path(__file__).parent / "results" / "load_data.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
