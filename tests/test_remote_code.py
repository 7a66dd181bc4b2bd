"""A checkpoint carries its code: a hospital without this package loads it with `trust_remote_code=True`, as any
custom architecture on the Hub."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from medfuse_hf import MedFuseForSequenceClassification

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
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification
    folder = sys.argv[1]
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    assert "medfuse_hf" not in sys.modules
    patient = [("sodium", 150.0, 2.0), ("heart_rate", 90, 0.5), ("icu_type", "medical", 0.0)]
    with torch.no_grad():
        logits = model(**tokenizer([patient], return_tensors="pt")).logits
    found = {"model": type(model).__module__, "tokenizer": type(tokenizer).__name__}
    print(json.dumps({"logits": logits[0].tolist(), **found}))
""")


def test_a_saved_checkpoint_loads_and_predicts_where_medfuse_hf_cannot_be_imported(tmp_path, tokenizer, tiny_config):
    model = MedFuseForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path / "checkpoint")
    tokenizer.save_pretrained(tmp_path / "checkpoint")
    for name in ("config.json", "preprocessor_config.json"):
        assert "auto_map" in json.loads((tmp_path / "checkpoint" / name).read_text()), name
    patient = [("sodium", 150.0, 2.0), ("heart_rate", 90, 0.5), ("icu_type", "medical", 0.0)]
    with torch.no_grad():
        expected = model(**tokenizer([patient], return_tensors="pt")).logits[0]

    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, str(tmp_path / "checkpoint")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["model"].startswith("transformers_modules") and loaded["tokenizer"] == "MedFuseTokenizer"
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, atol=1e-5, rtol=0)
