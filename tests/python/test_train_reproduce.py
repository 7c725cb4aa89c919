"""examples/reproduce/dsnet runs end to end on a tiny synthetic COCO set and writes both tables."""

import json
import os
import subprocess
import sys

from test_train_data import make_coco

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_reproduce_dsnet_tiny(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    make_coco(data, n=6, size=96)
    os.rename(data / "ann.json", data / "annotations.json")
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "examples/reproduce/dsnet/reproduce_dsnet.py"), "--data", str(data),
           "--out", str(out), "--epochs", "1", "--batch-size", "2", "--min-size", "96", "--max-size", "96",
           "--variants", "mobilenet,mobilenet+ds", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Table 1" in r.stdout and "Table 2" in r.stdout and "| MobileNet + DS |" in r.stdout
    assert "(83.4)" in r.stdout  # the paper's ResNet50+DS Map beside ours
    t = json.loads((out / "table.json").read_text())
    rows = {row["variant"]: row for row in t["rows"] if row["table"] == "Table 2"}
    assert "map" in rows["mobilenet+ds"] and "map" not in rows["resnet50"]  # only what ran has numbers
    assert 0 <= rows["mobilenet"]["map"] <= 100 and rows["mobilenet"]["paper"]["map"] == 80.9
    assert (out / "mobilenet_ds" / "log.csv").exists() and (out / "mobilenet_ds" / "last.pt").exists()
