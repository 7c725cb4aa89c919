"""Training engine: schedules vs torch.optim.lr_scheduler, optimisers, checkpoints (atomic, errors, C++
cross-read), resume equal to an uninterrupted run, early stopping, BatchNorm freezing, clipping."""

import json
import os
import random

import numpy as np
import pytest
import torch

import osteonet
from osteonet import train as ot


def _lrs_torch(sched_fn, n, metrics=None, base=(0.1, 0.01)):
    p = [torch.nn.Parameter(torch.zeros(1)) for _ in base]
    opt = torch.optim.SGD([{"params": [q], "lr": lr} for q, lr in zip(p, base)], lr=base[0])
    s = sched_fn(opt)
    out = [[g["lr"] for g in opt.param_groups]]
    for e in range(n):
        opt.step()
        s.step(metrics[e]) if metrics is not None else s.step()
        out.append([g["lr"] for g in opt.param_groups])
    return np.array(out)


def _lrs_ours(sched, n, metrics=None, base=(0.1, 0.01)):
    sched.attach(list(base))
    out = [list(sched.lrs)]
    for e in range(n):
        sched.step(metrics[e] if metrics is not None else None)
        out.append(list(sched.lrs))
    return np.array(out)


def test_step_and_cosine_equal_torch():
    S = torch.optim.lr_scheduler
    np.testing.assert_allclose(_lrs_ours(ot.make_schedule("step", step_size=3, gamma=0.5), 10),
                               _lrs_torch(lambda o: S.StepLR(o, 3, 0.5), 10), rtol=1e-12)
    np.testing.assert_allclose(_lrs_ours(ot.make_schedule("cosine", t_max=8, eta_min=0.001), 8),
                               _lrs_torch(lambda o: S.CosineAnnealingLR(o, 8, 0.001), 8), rtol=1e-9)


def test_warmup_equals_chained_linear_and_step():
    S = torch.optim.lr_scheduler
    ours = _lrs_ours(ot.make_schedule("step", step_size=4, gamma=0.1, warmup_epochs=3, warmup_start_factor=0.25), 12)
    ref = _lrs_torch(lambda o: S.ChainedScheduler([S.LinearLR(o, 0.25, 1.0, total_iters=3), S.StepLR(o, 4, 0.1)]), 12)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_plateau_halving_equals_reduce_on_plateau(mode):
    rng = np.random.default_rng(0)
    metrics = list(np.round(rng.normal(size=30).cumsum() * 0.1, 2))  # ties and plateaus
    S = torch.optim.lr_scheduler
    ours = _lrs_ours(ot.make_schedule("plateau", factor=0.5, patience=2, mode=mode, cooldown=1, min_lr=0.001), 30, metrics)
    ref = _lrs_torch(lambda o: S.ReduceLROnPlateau(o, mode=mode, factor=0.5, patience=2, cooldown=1, min_lr=0.001),
                     30, metrics)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert ours[-1, 0] < ours[0, 0]  # the sequence did trigger halving


def test_schedule_errors_and_state():
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        ot.make_schedule("cosin", t_max=3)
    with pytest.raises(ValueError, match="did you mean 'gamma'"):
        ot.make_schedule("step", gama=0.1)
    s = ot.make_schedule("plateau")
    s.attach([0.1])
    with pytest.raises(ValueError, match="needs the monitored metric"):
        s.step()
    a = ot.make_schedule("cosine", t_max=10, warmup_epochs=2)
    a.attach([1.0])
    for _ in range(4):
        a.step()
    b = ot.make_schedule("cosine", t_max=10, warmup_epochs=2)
    b.attach([1.0])
    b.load_state_dict(a.state_dict())
    a.step()
    b.step()
    assert a.lrs == b.lrs and b.epoch == 5


def test_create_optimizer_groups_and_names():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    m[1].bias.requires_grad_(False)
    opt = ot.create_optimizer("sgd", [{"params": m[0].parameters(), "lr_scale": 0.1}, {"params": m[1].parameters()}],
                              lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert ot.get_lrs(opt) == pytest.approx([0.001, 0.01])
    assert len(opt.param_groups[1]["params"]) == 1 and opt.param_groups[0]["nesterov"]
    assert isinstance(ot.create_optimizer("adamw", m, lr=1e-3, weight_decay=0.05), torch.optim.AdamW)
    with pytest.raises(ValueError, match="did you mean 'adam'"):
        ot.create_optimizer("adan", m)


# ------------------------------------------------------------------------------------------ checkpoints


def _toy(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(8, 1))
    g = torch.Generator().manual_seed(123)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]], dtype=torch.float32) + 0.1
    ds = torch.utils.data.TensorDataset(x, y)
    return model, ds


def _mse_step(model, batch):
    x, y = batch
    noise = torch.from_numpy(np.random.normal(size=y.shape).astype(np.float32)) * 0.01 + random.random() * 0.0
    return torch.nn.functional.mse_loss(model(x), y + noise)


def _run(tmp, epochs, resume=None, total=6):
    model, ds = _toy()
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)
    opt = ot.create_optimizer("sgd", model, lr=0.05, momentum=0.9, nesterov=True)
    t = ot.Trainer(model, opt, ot.make_schedule("step", step_size=2, gamma=0.5), epochs=epochs, out_dir=str(tmp),
                   clip_grad_norm=1.0, progress=False, seed=7)
    if resume:
        t.resume(resume)
    t.fit(loader, _mse_step, eval_fn=lambda m, e: {"w": float(m[0].weight[0, 0])})
    return model, t


def test_resume_equals_uninterrupted_run(tmp_path):
    straight, t1 = _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 3)
    resumed, t2 = _run(tmp_path / "b", 6, resume=str(tmp_path / "b" / "last.pt"))
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert [r["train_loss"] for r in t1.history] == [r["train_loss"] for r in t2.history]
    lines = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,lr,w,seconds" and len(lines) == 7
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == 6
    final = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert final["epochs"] == 6 and final["last"]["epoch"] == 6


def test_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    model, _ = _toy()
    path = str(tmp_path / "ck.pt")
    ot.save_checkpoint(path, model, epoch=1)

    def crash(src, dst):  # the process dies between writing the new bytes and the rename
        raise OSError("simulated crash")

    monkeypatch.setattr("osteonet.io.atomic.os.replace", crash)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(OSError):
        ot.save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.pt"]  # the failed write removed its temporary file
    fresh, _ = _toy(seed=5)
    assert ot.load_checkpoint(path, fresh)["epoch"] == 1
    # A killed process leaves its hidden temporary file; the next run in the folder removes it.
    stale = tmp_path / ".last.pt.k3j2x1.tmp"
    stale.write_bytes(open(path, "rb").read()[:100])
    t = ot.Trainer(model, ot.create_optimizer("sgd", model, lr=0.0), epochs=1, out_dir=str(tmp_path), progress=False)
    t.fit([_toy()[1].tensors], _mse_step)
    assert not stale.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    ot.save_checkpoint(path, model, epoch=2)
    assert ot.load_checkpoint(path, fresh)["epoch"] == 2
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_bad_checkpoints_give_one_clear_error(tmp_path):
    model, _ = _toy()
    good = str(tmp_path / "good.pt")
    ot.save_checkpoint(good, model, epoch=3)
    raw = open(good, "rb").read()
    cases = {
        "empty.pt": (b"", "truncated"),
        "half.pt": (raw[: len(raw) // 2], "truncated"),
        "text.pt": (b"not a checkpoint at all\n" * 10, "not an osteonet checkpoint"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"checkpoint .*{name}: {msg}") as e:
            ot.load_checkpoint(str(tmp_path / name), model)
        assert "\n" not in str(e.value)
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not an osteonet checkpoint .*osteonet_checkpoint"):
        ot.load_checkpoint(str(tmp_path / "plain.pt"), model)
    with pytest.raises(ValueError, match="no such file"):
        ot.load_checkpoint(str(tmp_path / "missing.pt"), model)
    with pytest.raises(ValueError, match="does not fit this model"):
        ot.load_checkpoint(good, torch.nn.Linear(4, 1))


def test_cpp_reads_python_checkpoints_of_osteonet_models(tmp_path):
    model = osteonet.create_model("resnet18", num_classes=3)
    opt = ot.create_optimizer("adam", model, lr=1e-3)
    path = str(tmp_path / "r18.pt")
    ot.save_checkpoint(path, model, opt, ot.make_schedule("step"), epoch=4)
    s = ot.checkpoint_summary(path)  # parsed by torch::pickle_load in C++
    assert s["writer"] == "python" and s["epoch"] == 4 and s["version"] == ot.CHECKPOINT_VERSION
    assert s["model_shapes"]["fc.weight"] == [3, 512]
    assert {"model", "optimizer", "schedule", "rng", "history"} <= set(s["keys"])


def test_rng_state_round_trip():
    ot.seed_everything(3)
    state = ot.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ot.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


# ------------------------------------------------------------------------------------------ the loop


def test_early_stopping_stops_after_patience(tmp_path):
    model, ds = _toy()
    opt = ot.create_optimizer("sgd", model, lr=0.0)  # nothing changes: the monitored value never improves
    t = ot.Trainer(model, opt, epochs=20, patience=2, monitor="score", mode="max", progress=False, out_dir=str(tmp_path))
    t.fit(torch.utils.data.DataLoader(ds, batch_size=64), _mse_step, eval_fn=lambda m, e: {"score": 0.5})
    assert t.stopped_early and t.epoch == 3
    assert os.path.exists(tmp_path / "best.pt")
    assert ot.load_checkpoint(str(tmp_path / "best.pt"))["epoch"] == 1


def test_freeze_batchnorm_keeps_statistics_and_affine(tmp_path):
    model = osteonet.create_model("resnet18", num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items() if "bn1" in k or "downsample.1" in k}
    opt = ot.create_optimizer("sgd", model, lr=0.1)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    t = ot.Trainer(model, opt, epochs=2, freeze_bn=True, progress=False)
    t.fit([(x, y)], ot.classification_step())
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert not torch.equal(model.state_dict()["fc.weight"], model.fc.weight.detach() * 0)  # trained
    assert not model.bn1.weight.requires_grad and model.fc.weight.requires_grad


def test_clipping_matches_a_hand_written_step():
    import copy

    model, ds = _toy()
    x, y = ds.tensors
    ref = copy.deepcopy(model)
    step = lambda m, b: torch.nn.functional.mse_loss(m(b[0]) * 100, b[1])  # noqa: E731
    t = ot.Trainer(model, ot.create_optimizer("sgd", model, lr=0.1, momentum=0.0), epochs=1, clip_grad_norm=0.5,
                   progress=False, seed=None)
    torch.manual_seed(11)  # same dropout draws for both
    t.fit([(x, y)], step)
    torch.manual_seed(11)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    ref.train()
    step(ref, (x, y)).backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    assert norm > 0.5  # the clip is active
    opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_non_finite_loss_and_bad_options():
    model, ds = _toy()
    opt = ot.create_optimizer("sgd", model)
    with pytest.raises(ValueError, match="eval_every"):
        ot.Trainer(model, opt, eval_every=0)
    t = ot.Trainer(model, opt, epochs=1, progress=False)
    with pytest.raises(ValueError, match="not finite at epoch 1 batch 1"):
        t.fit([ds.tensors], lambda m, b: torch.tensor(float("nan"), requires_grad=True))


def test_building_a_trainer_changes_no_global_state():
    model, ds = _toy()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    det = torch.are_deterministic_algorithms_enabled()
    ot.Trainer(model, ot.create_optimizer("sgd", model), seed=5, progress=False)
    assert torch.equal(before, torch.get_rng_state()) and torch.are_deterministic_algorithms_enabled() == det
    ot.Trainer(model, ot.create_optimizer("sgd", model), seed=5, epochs=1, progress=False).fit([ds.tensors], _mse_step)
    torch.manual_seed(5)
    assert not torch.equal(before, torch.get_rng_state())  # fit seeded (and drew from) the generator
    assert torch.are_deterministic_algorithms_enabled() == det  # determinism is opt-in


def test_keep_best_restores_the_best_epoch(tmp_path):
    for out in (None, str(tmp_path)):
        model, ds = _toy()
        scores = iter([0.3, 0.9, 0.5, 0.1])
        snap = {}

        def ev(m, epoch):  # noqa: ANN001
            snap[epoch] = {k: v.clone() for k, v in m.state_dict().items()}
            return {"score": next(scores)}

        t = ot.Trainer(model, ot.create_optimizer("sgd", model, lr=0.05), epochs=4, monitor="score", mode="max",
                       keep_best=True, out_dir=out, progress=False)
        t.fit(torch.utils.data.DataLoader(ds, batch_size=16), _mse_step, ev)
        assert t.best_epoch() == 2
        for k, v in model.state_dict().items():
            assert torch.equal(v, snap[2][k]), k


def test_generators_and_weighted_loss_resume_exactly(tmp_path):
    """A loader drawing from its own generator, (loss, n) steps, resume of a finished and an unfinished run."""
    def run(out, epochs, resume):
        model, ds = _toy()
        x, y = ds.tensors
        gen = torch.Generator().manual_seed(9)

        class Batches:
            def __iter__(self):
                for idx in torch.randperm(len(x), generator=gen).split(20):
                    yield idx

        t = ot.Trainer(model, ot.create_optimizer("adam", model, lr=0.01), epochs=epochs, out_dir=str(out), seed=1,
                       generators=[gen], progress=False)
        t.fit(Batches(), lambda m, idx: (torch.nn.functional.mse_loss(m(x[idx]), y[idx]), len(idx)), resume=resume)
        return model, t, gen

    a, ta, ga = run(tmp_path / "a", 5, False)
    run(tmp_path / "b", 2, False)
    b, tb, gb = run(tmp_path / "b", 5, True)
    c, tc, gc = run(tmp_path / "b", 5, True)  # finished: only its final state comes back
    for m in (b, c):
        for k, v in a.state_dict().items():
            assert torch.equal(v, m.state_dict()[k]), k
    assert [r["train_loss"] for r in ta.history] == [r["train_loss"] for r in tb.history] == [r["train_loss"] for r in tc.history]
    assert torch.equal(ga.get_state(), gb.get_state()) and torch.equal(ga.get_state(), gc.get_state())
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        ot.Trainer(a, ot.create_optimizer("sgd", a), progress=False).fit([], _mse_step, resume=True)
