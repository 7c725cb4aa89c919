"""One GPU scenario per process (benchmarks/gpu/run.sh), printing what the session measured: used to find
which construction crashed on the first GPU run. Usage: python benchmarks/gpu/probe.py NAME"""
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
import osteonet  # noqa: E402
from osteonet.runtime import InferenceSession  # noqa: E402

warnings.simplefilter("always")
torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
name = sys.argv[1]
print("probe", name, flush=True)
if name.startswith("det"):
    from bench_runtime import peaked_heads, scene

    model = osteonet.create_model("fasterrcnn", backbone="resnet50", num_classes=3, min_size=256, max_size=256).eval()
    model.load_state_dict(peaked_heads(model.state_dict()))
    g = torch.Generator().manual_seed(1)
    images = [scene(256, g).cuda()]
    s = InferenceSession(model, images, device="cuda", cuda_graph=name.endswith("graph"),
                         dtype="bfloat16" if "bf16" in name else "float32")
else:
    from bench_runtime import perturb_

    model = osteonet.create_model("resnet50").eval()
    perturb_(model)
    x = torch.randn(1, 3, 224, 224, device="cuda")
    s = InferenceSession(model, x, device="cuda", cuda_graph=name.endswith("graph"),
                         dtype="bfloat16" if "bf16" in name else "float32")
print("built", s, flush=True)
out = s(images if name.startswith("det") else x)
torch.cuda.synchronize()
print("ran", type(out).__name__, flush=True)
