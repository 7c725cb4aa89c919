"""Learning curves of the DSNet quick preset (issue 15): trains one variant exactly as
`osteonet reproduce dsnet --preset quick` does (same data, split, options, seed), and evaluates the held-out
split after every epoch (VOC mAP@0.5, Recall and Acc at score >= 0.5), to show where the preset's numbers
stand and what limits them. The test split only measures here: nothing is selected on it.

Usage: python examples/reproduce/dsnet/learning_curves.py --out runs/curves --variant resnet50 --epochs 12 \
           [--set lr=0.02] [--set augment=false] [--preset n_patients=90] [--data out/dsnet/data]
Writes OUT/<variant>/curve.json (one record per epoch) and prints one line per epoch.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from osteonet import tasks
from osteonet import train as ot
from osteonet.io import write_json
from osteonet.reproduce import dsnet
from osteonet.synth import generate_ct_dataset
from osteonet.tasks.detection import TASK


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--variant", default="resnet50", choices=list(dsnet.VARIANTS))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--data", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="task option KEY=JSON value (lr=0.02, augment=false)")
    p.add_argument("--preset", action="append", default=[], help="quick preset entry KEY=JSON value (n_patients=90)")
    a = p.parse_args(argv)
    cfg = dict(dsnet.PRESETS["quick"], epochs=a.epochs)
    for kv in a.preset:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)
    options = dsnet.variant_options(a.variant, cfg)
    for kv in a.set:
        k, v = kv.split("=", 1)
        options[k] = json.loads(v)
    data = a.data or os.path.join(a.out, "data")
    if not os.path.exists(os.path.join(data, "annotations.json")):
        generate_ct_dataset(data, cfg["n_patients"], cfg["slices_per_patient"], seed=a.seed, progress=False)
    run = os.path.join(a.out, a.variant.replace("+", "_"))
    curve, t0 = [], time.time()
    fit, trainer_fit = TASK.fit, ot.Trainer.fit

    def fit_with_curve(samples, train, o, run_dir, seed, resume, progress):
        test = [i for i in range(len(samples.ids)) if i not in set(train)]

        def eval_fn(model, epoch):
            with tempfile.TemporaryDirectory() as tmp:
                m, _ = TASK.evaluate({"model": model, "classes": samples.info["classes"],
                                      "score_threshold": o["score_threshold"]}, samples, test, tmp, seed=seed)
            rec = {"epoch": epoch, "map": m["map"], "recall": m["recall"], "acc": m["acc"], "seconds": time.time() - t0}
            curve.append(rec)
            print(json.dumps(rec), flush=True)
            model.train()
            return {"test_map": m["map"]}

        def patched(self, loader, step_fn=ot.detection_step, eval_fn_=None, resume=False):
            return trainer_fit(self, loader, step_fn, eval_fn, resume)

        ot.Trainer.fit = patched
        try:
            return fit(samples, train, o, run_dir, seed, resume, progress)
        finally:
            ot.Trainer.fit = trainer_fit

    TASK.fit = fit_with_curve
    tasks.train("detection", data, run, options, seed=a.seed, test_fraction=0.2, resume=False, progress=False,
                command="examples/reproduce/dsnet/learning_curves.py " + " ".join(argv or sys.argv[1:]))
    write_json(os.path.join(run, "curve.json"), {"variant": a.variant, "options": options, "curve": curve})


if __name__ == "__main__":
    main()
