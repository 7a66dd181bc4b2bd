"""What a result needs to be reproduced: resolved configuration, git commit, seed, library versions, hardware."""

import json
import platform
import resource
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from accelerate import Accelerator

from .. import __version__

LIBRARIES = ("torch", "transformers", "accelerate", "datasets", "safetensors", "numpy", "scikit-learn")


def git_commit() -> dict:
    """Commit of the code that ran, and whether the working tree had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                                    text=True).stdout.strip())
        return {"commit": commit, "uncommitted_changes": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}


def library_versions() -> dict[str, str | None]:
    versions = {"python": sys.version.split()[0], "medfuse-hf": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def device_name(device: torch.device) -> str:
    """The hardware in words, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu: 2 cores (x86_64)': what a timing depends on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}: {torch.get_num_threads()} threads ({platform.machine()})"


def processor_name() -> str:
    """The CPU's model and the vector instructions torch's kernels use on it, e.g. 'AMD EPYC (AVX512)': the same
    seeded run can end in other figures on another CPU (its float kernels differ), so a figure that does not repeat is
    first checked against this."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.partition(":")[2].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), model)
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


def write_run_info(output_dir: Path, config: dict, accelerator: Accelerator, resuming: bool = False) -> dict:
    """The run's record, written again at each start: `git` is the code of this start, `git_at_start` that of the
    run's first (kept from the earlier record when `resuming`), since a resumed run's weights are partly the earlier
    code's, and a finished run resumed to be tested again would otherwise claim to have been trained by today's."""
    git = git_commit()
    info = {
        "config": config,
        "git": git,
        "git_at_start": (_first_start(output_dir) or git) if resuming else git,
        "versions": library_versions(),
        "command": sys.argv,
        "distributed": {
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "device_name": device_name(accelerator.device),
            "mixed_precision": accelerator.mixed_precision,
            "distributed_type": str(accelerator.distributed_type),
        },
        "platform": platform.platform(),
        "processor": processor_name(),
    }
    if accelerator.is_main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "run_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


def _first_start(output_dir: Path) -> dict | None:
    """The commit an earlier record says the run first started at (records written before it was kept name their
    own start's), or None where there is no record."""
    path = Path(output_dir) / "run_info.json"
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    return earlier.get("git_at_start", earlier.get("git"))


def read_run_settings(run_dir: Path) -> dict:
    """The settings a recipe run recorded (`run_info.json`'s `config`); a folder that holds no run is refused naming
    it, before anything is loaded from it."""
    path = Path(run_dir) / "run_info.json"
    if not path.is_file():
        raise SystemExit(f"{run_dir} holds no recipe run (no run_info.json): give the --output_dir of a "
                         "finetune.py or pretrain.py run")
    return json.loads(path.read_text())["config"]


def throughput(state, accelerator: Accelerator) -> dict:
    """Training wall time (resumed runs included), patients and events per second over all processes, peak memory,
    from a run's `LoopState` counters."""
    totals = accelerator.reduce(torch.tensor([state.patients, state.events], device=accelerator.device), "sum")
    seconds = state.train_seconds
    figures = {
        "train_seconds": round(seconds, 1),
        "patients_trained": int(totals[0]),
        "events_trained": int(totals[1]),
        "patients_per_second": round(int(totals[0]) / seconds, 1) if seconds else None,
        "events_per_second": round(int(totals[1]) / seconds) if seconds else None,
        "peak_rss_mib_main_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if torch.cuda.is_available():
        figures["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return figures
