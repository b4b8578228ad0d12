"""DistributedDataParallel on 2 CPU processes (gloo): a pixelops model trains to the parameters that the same
run with torch ops reaches."""
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
STEPS = 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    sys.path.insert(0, os.path.dirname(__file__))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import pixelops
        from nn_models import batch, small_cnn

        results = {}
        for name in ("torch", "pixelops"):
            model = small_cnn(seed=0)
            loss_fn = torch.nn.CrossEntropyLoss()
            if name == "pixelops":
                pixelops.swap(model, verbose=False)
                loss_fn = pixelops.nn.CrossEntropyLoss()
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
            for step in range(STEPS):
                x, y = batch(n=6, seed=100 * step + rank)  # each rank its own shard
                opt.zero_grad()
                loss_fn(ddp(x), y).backward()
                opt.step()
            results[name] = [p.detach().clone() for p in model.parameters()]
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done with every collective before either tears gloo down: a rank that destroyed its group
        # while the other was still talking to it was seen to abort the other (std::terminate) once in CI.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_cpu_processes_match_torch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for a, b in zip(r0["pixelops"], r1["pixelops"]):
        assert torch.equal(a, b)  # DDP kept the replicas in step
    for ours, theirs in zip(r0["pixelops"], r0["torch"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    initial = [p.detach() for p in __import__("nn_models").small_cnn(seed=0).parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(r0["pixelops"], initial))  # they did train
