"""A checkpoint carries its code: a hospital without this package loads it with `trust_remote_code=True`, as any
custom architecture on the Hub."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from medfuse_hf import MedFuseForPreTraining, MedFuseForSequenceClassification, MedFuseTokenizer

BASE = Path(__file__).parents[1] / "model_cards" / "medfuse-base" / "model"

BLOCKED_IMPORT = textwrap.dedent("""
    import json, sys
    class NoMedFuse:  # this Python cannot import medfuse_hf, installed or not
        def find_spec(self, name, path=None, target=None):
            if name == "medfuse_hf" or name.startswith("medfuse_hf."):
                raise ImportError("medfuse_hf is blocked in this test")
    sys.meta_path.insert(0, NoMedFuse())
    try:
        import medfuse_hf
    except ImportError:
        pass
    else:
        raise SystemExit("the block did not work")
    import torch
    import transformers
    folder, auto_class, patient = sys.argv[1], getattr(transformers, sys.argv[2]), json.loads(sys.argv[3])
    model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = transformers.AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    assert "medfuse_hf" not in sys.modules
    with torch.no_grad():
        output = model(**tokenizer([patient], return_tensors="pt")).to_tuple()[0]
    found = {"model": type(model).__module__, "tokenizer": type(tokenizer).__name__}
    print(json.dumps({"output": output[0].tolist(), **found}))
""")


def load_without_medfuse_hf(folder: Path, auto_class: str, patient: list, tmp_path: Path) -> dict:
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", PYTHONPATH="",
               OMP_NUM_THREADS=str(torch.get_num_threads()))  # bitwise equality needs the same split of the sums
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, str(folder), auto_class, json.dumps(patient)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["model"].startswith("transformers_modules") and loaded["tokenizer"] == "MedFuseTokenizer"
    return loaded


def test_a_saved_checkpoint_loads_and_predicts_where_medfuse_hf_cannot_be_imported(tmp_path, tokenizer, tiny_config):
    model = MedFuseForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path / "checkpoint")
    tokenizer.save_pretrained(tmp_path / "checkpoint")
    for name in ("config.json", "preprocessor_config.json"):
        assert "auto_map" in json.loads((tmp_path / "checkpoint" / name).read_text()), name
    patient = [("sodium", 150.0, 2.0), ("heart_rate", 90, 0.5), ("icu_type", "medical", 0.0)]
    with torch.no_grad():
        expected = model(**tokenizer([patient], return_tensors="pt")).logits[0]

    loaded = load_without_medfuse_hf(tmp_path / "checkpoint", "AutoModelForSequenceClassification", patient, tmp_path)
    torch.testing.assert_close(torch.tensor(loaded["output"]), expected, atol=1e-5, rtol=0)


@pytest.mark.skipif(not BASE.exists(), reason="the committed medfuse-base release is not in this checkout")
def test_the_committed_base_released_with_its_code_forecasts_alike_where_medfuse_hf_cannot_be_imported(tmp_path):
    """What `publish.py --release_dir` and `push_run` upload: the committed weights and tokenizer, plus the code."""
    model = MedFuseForPreTraining.from_pretrained(BASE).eval()
    tokenizer = MedFuseTokenizer.from_pretrained(BASE)
    model.save_pretrained(tmp_path / "release")
    tokenizer.save_pretrained(tmp_path / "release")
    assert (tmp_path / "release" / "model.safetensors").read_bytes() == (BASE / "model.safetensors").read_bytes()
    patient = [["sodium", 131.0, 2.0], ["heart_rate", 112, 0.5], ["lactate", 4.1, 3.0], ["icu_type", 2, 0.0]]
    with torch.no_grad():
        expected = model(**tokenizer([patient], return_tensors="pt")).forecast[0]

    loaded = load_without_medfuse_hf(tmp_path / "release", "AutoModelForPreTraining", patient, tmp_path)
    torch.testing.assert_close(torch.tensor(loaded["output"]), expected, atol=0, rtol=0)
