"""Multi-process training (osteonet.train.launch, Trainer under DistributedDataParallel, `osteonet train
--nproc`), 2 ranks on the CPU over gloo: 2 ranks of batch B train to the weights of 1 rank of batch 2B; losses
and validation metrics are averaged over the ranks; rank 0 alone writes; a resume on 2 ranks (started by
hand as torchrun would) ends as the uninterrupted run; a killed or failing rank stops the run with one line.

The reference run of 1 rank draws its batches with a DistributedSampler of one replica, so that its batch
k is the union of the 2 ranks' batches k. BatchNorm: DDP does not synchronise batch statistics (each
rank normalises by its own half batch), so the osteonet model is compared with frozen BatchNorm
(freeze_bn=True) against the doubled batch, and in training mode against one process that normalises
each half batch by itself; the tiny model has none.
"""

import json
import os
import signal
import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import osteonet
from osteonet import train as ot
from osteonet.cli import main
from osteonet.train import distributed

N, FEATURES, B = 32, 6, 4  # 32 samples, per-rank batch 4: 4 steps an epoch on 2 ranks
LR = 0.01  # resnet18: small enough that BatchNorm in training mode on batches of 2 does not blow the weights up


def tiny_data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, FEATURES, generator=g)
    return TensorDataset(x, (x[:, :1] * 2 - x[:, 1:2]).tanh() + 0.1 * torch.randn(N, 1, generator=g))


def tiny_model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def mse_step(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def val_fn(model, epoch):
    """The validation loss of this rank's equal share of 8 validation samples (the ranks' mean is the loss
    on all of them), so that the Trainer's averaging over the ranks is what makes it right."""
    x, y = tiny_data().tensors
    r, w = distributed.rank(), distributed.world_size()
    return {"val_loss": float(torch.nn.functional.mse_loss(model(x[:8][r::w]), y[:8][r::w]))}


def fit_tiny(batch_size, epochs, out_dir=None, resume=False, loader=None):
    """Rank code: the tiny model trained by the Trainer; returns (weights, history, every rank's next random
    draw, in rank order)."""
    ds = tiny_data()
    model = tiny_model()
    loader = loader or DataLoader(ds, batch_size=batch_size, shuffle=True)
    opt = ot.create_optimizer("sgd", model, lr=0.1, momentum=0.9)
    trainer = ot.Trainer(model, opt, "constant", epochs=epochs, seed=5, out_dir=out_dir, progress=True,
                         monitor="val_loss", keep_best=False)
    history = trainer.fit(loader, mse_step, val_fn, resume=resume)
    return model.state_dict(), history, distributed.all_gather(float(torch.rand(())))


def reference(epochs):
    """1 rank, batch 2B, the DistributedSampler's order for one replica (no process group needed)."""
    ds = tiny_data()
    loader = DataLoader(ds, batch_size=2 * B, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=5))
    return fit_tiny(2 * B, epochs, loader=loader)


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


def assert_same_history(h2, h1):
    assert len(h2) == len(h1)
    for r2, r1 in zip(h2, h1):
        for k in ("train_loss", "val_loss"):
            assert r2[k] == pytest.approx(r1[k], rel=1e-5), (k, r2, r1)


def run_as_torchrun(rank, world, port, out_dir, epochs):
    """What torchrun leaves a worker: the environment variables, no process group; the Trainer joins it."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fit_tiny(B, epochs, out_dir)
    torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------- tests
def test_two_ranks_train_to_the_weights_of_one_rank_with_the_doubled_batch_and_only_rank_0_writes(tmp_path, capfd):
    out = str(tmp_path / "run")
    weights, history, _ = ot.launch(fit_tiny, 2, (B, 3, out))
    err = capfd.readouterr().err
    ref_weights, ref_history, _ = reference(3)
    assert_same_weights(weights, ref_weights, atol=1e-6)
    assert_same_history(history, ref_history)  # train_loss and val_loss averaged over the ranks
    # rank 0 alone writes and prints: one log line per epoch, one set of files, one rng state per rank
    assert sum(line.startswith("epoch ") for line in err.splitlines()) == 3, err
    assert sorted(os.listdir(out)) == ["best.pt", "last.pt", "log.csv", "log.jsonl", "metrics.json"]
    assert len(open(os.path.join(out, "log.jsonl")).read().splitlines()) == 3
    state = torch.load(os.path.join(out, "last.pt"))
    assert len(state["rng_ranks"]) == 2 and not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])
    assert ot.checkpoint_summary(os.path.join(out, "last.pt"))["epoch"] == 3  # the C++ reader still parses it
    # a 2-rank checkpoint does not resume on 1 rank (its shares and generators are per rank)
    with pytest.raises(ValueError, match=r"written by a run of 2 process\(es\), this run has 1"):
        fit_tiny(2 * B, 4, out, resume=True)


def test_resume_on_two_ranks_ends_as_the_uninterrupted_run(tmp_path):
    # the first 2 epochs as torchrun would start them (environment variables only), the rest by launch
    out = str(tmp_path / "run")
    ctx = torch.multiprocessing.get_context("spawn")
    port = distributed._free_port()
    procs = [ctx.Process(target=run_as_torchrun, args=(r, 2, port, out, 2)) for r in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert json.load(open(os.path.join(out, "metrics.json")))["epochs"] == 2
    resumed = ot.launch(fit_tiny, 2, (B, 4, out, True))
    whole = ot.launch(fit_tiny, 2, (B, 4, str(tmp_path / "whole")))
    assert_same_weights(resumed[0], whole[0], atol=0)
    assert [r["train_loss"] for r in resumed[1]] == [r["train_loss"] for r in whole[1]]
    assert resumed[2] == whole[2] and resumed[2][0] != resumed[2][1]  # each rank's own generators continue
    assert_same_weights(resumed[0], reference(4)[0], atol=1e-6)


def per_half_step(model, batch):
    """One process doing what 2 ranks of DDP do with BatchNorm in training mode: each half of the batch
    (rank r's samples are positions r, r+2, ... of the one-replica batch) normalised by itself, the
    two losses averaged."""
    x, y = batch
    ce = torch.nn.functional.cross_entropy
    return (ce(model(x[0::2]), y[0::2]) + ce(model(x[1::2]), y[1::2])) / 2


def fit_resnet(batch_size, freeze_bn, sampler_seed=None, step=None):
    """An osteonet model from the registry (resnet18, 1 channel, 2 classes), 2 steps on 64x64 inputs."""
    torch.manual_seed(0)
    model = osteonet.create_model("resnet18", num_classes=2, in_chans=1)
    g = torch.Generator().manual_seed(4)
    ds = TensorDataset(torch.randn(8, 1, 64, 64, generator=g), torch.randint(0, 2, (8,), generator=g))
    sampler = None if sampler_seed is None else DistributedSampler(ds, num_replicas=1, rank=0, seed=sampler_seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=sampler is None, sampler=sampler)
    opt = ot.create_optimizer("sgd", model, lr=LR, momentum=0.0)
    trainer = ot.Trainer(model, opt, epochs=1, seed=2, freeze_bn=freeze_bn, progress=False)
    trainer.fit(loader, step or ot.classification_step())
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point() and "running" not in k}


def fit_resnet_both(batch_size):
    return fit_resnet(batch_size, True), fit_resnet(batch_size, False)


def test_an_osteonet_model_on_two_ranks_equals_one_rank_with_batchnorm_frozen_or_per_half(tmp_path):
    frozen, training = ot.launch(fit_resnet_both, 2, (2,))
    # frozen BatchNorm: the same as one process with the doubled batch
    assert_same_weights(frozen, fit_resnet(4, True, sampler_seed=2), atol=2e-5)
    torch.manual_seed(0)
    start = osteonet.create_model("resnet18", num_classes=2, in_chans=1).state_dict()  # fit_resnet's start
    assert not torch.allclose(frozen["fc.weight"], start["fc.weight"])  # it did train
    # BatchNorm in training mode: DDP does not synchronise batch statistics, so 2 ranks equal one process
    # normalising each half batch by itself, and not one normalising the whole batch
    assert_same_weights(training, fit_resnet(4, False, sampler_seed=2, step=per_half_step), atol=2e-5)
    whole = fit_resnet(4, False, sampler_seed=2)
    assert max(float((training[k] - whole[k]).abs().max()) for k in whole) > 1e-3


def die_at_step_2(how):
    """Rank 1 kills itself (SIGKILL), raises or hangs at its second step; rank 0 is then waiting on it."""
    steps = []

    def step(model, batch):
        steps.append(1)
        if distributed.rank() == 1 and len(steps) == 2:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "hang":
                time.sleep(300)
            raise ValueError("a broken sample")
        return mse_step(model, batch)

    model = tiny_model()
    trainer = ot.Trainer(model, ot.create_optimizer("sgd", model, lr=0.1), epochs=2, progress=False)
    trainer.fit(DataLoader(tiny_data(), batch_size=B, shuffle=True), step)


@pytest.mark.parametrize("how, timeout, message", [
    ("kill", 60, r"^launch: rank 1 was killed by signal SIGKILL \(exit code -9\); "),
    ("raise", 60, r"^launch: rank 1 raised ValueError: a broken sample; "),
    # a rank that hangs without dying: its peer's collective times out (the process group's timeout)
    ("hang", 3, r"^launch: rank 0 raised RuntimeError: .*[Tt]imed out.*; ")])
def test_a_dying_rank_stops_the_run_with_one_line(how, timeout, message):
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=message) as e:
        ot.launch(die_at_step_2, 2, (how,), timeout=timeout)
    assert "\n" not in str(e.value) and "the run was stopped" in str(e.value)
    assert time.monotonic() - t0 < 45  # no hang (the 60 s timeouts are not what stops the first two)


def test_loaders_that_cannot_be_split_by_rank_are_refused():
    ds = tiny_data()
    with pytest.raises(ValueError, match="training loader must be a torch DataLoader .* got list"):
        distributed.shard_loader([ds[0]], 0)
    sampler = torch.utils.data.WeightedRandomSampler([1.0] * N, N)
    with pytest.raises(ValueError, match="sampler WeightedRandomSampler cannot be split"):
        distributed.shard_loader(DataLoader(ds, batch_size=2, sampler=sampler), 0)
    with pytest.raises(ValueError, match="replacement or num_samples"):
        distributed.shard_loader(DataLoader(ds, batch_size=2, sampler=torch.utils.data.RandomSampler(ds, True)), 0)
    given = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, num_replicas=2, rank=1))
    assert distributed.shard_loader(given, 0) is given


def test_launch_and_environment_errors(monkeypatch):
    with pytest.raises(ValueError, match="nproc must be an int >= 1, got nproc=0"):
        ot.launch(fit_tiny, 0)
    with pytest.raises(ValueError, match="threads must be an int >= 1 .* got threads=0"):
        ot.launch(fit_tiny, 2, threads=0)
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="nccl needs a GPU per rank"):
            ot.launch(fit_tiny, 2, backend="nccl")
    assert ot.launch(distributed.world_size, 1) == 1  # nproc=1: this process, no process group
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT is not"):
        fit_tiny(B, 1)


def test_osteonet_train_nproc_2_end_to_end(tmp_path, capsys):
    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    assert main(["synth", "--example", "classification", "--out", data]) == 0
    args = ["train", "--task", "classification", "--data", data, "--out", run, "--quiet", "--model", "dxa_cnn21",
            "--epochs", "2", "--image-size", "32", "--batch-size", "2", "--nproc", "2"]
    assert main(args) == 0
    card = json.load(open(os.path.join(run, "model.json")))
    assert card["status"] == "trained" and card["checkpoints"] == {"classifier": "classifier/last.pt"}
    assert os.path.exists(os.path.join(run, "metrics.json")) and os.path.exists(os.path.join(run, "classifier", "last.pt"))
    assert len(torch.load(os.path.join(run, "classifier", "last.pt"))["rng_ranks"]) == 2
    assert main(args) == 2  # a run folder that holds files: refused on every rank, one line
    assert "already holds files" in capsys.readouterr().err
    before = open(os.path.join(run, "classifier", "log.csv")).read()
    assert main(args + ["--resume"]) == 0  # a finished run: every rank loads last.pt, nothing trains again
    assert open(os.path.join(run, "classifier", "log.csv")).read() == before
    assert main(args[:-1] + ["1", "--resume"]) == 2  # its checkpoints are 2 ranks'
    assert "written by a run of 2 process(es), this run has 1; resume it with as many (--nproc 2)" in capsys.readouterr().err
