"""Several processes, one training: torch.distributed as torchrun sets it up.

Under ``torchrun`` (or ``python -m torch.distributed.run``) each process finds its rank
in the environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT), so multi-node
training is torchrun's business, not ours. ``gelanc train --device 0,1`` outside
torchrun starts it for the user on one machine (:func:`launch`).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, validates and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place, from torchrun's environment (one process when absent)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def parse_device(spec: str | None) -> tuple[str, list[int]]:
    """``cpu`` | ``cuda`` | ``0`` | ``0,1,…`` → (device type, CUDA ids named; empty = any)."""
    spec = (spec or "").strip().lower()
    if spec in ("", "auto"):
        return ("cuda" if torch.cuda.is_available() else "cpu"), []
    if spec == "cpu":
        return "cpu", []
    if spec in ("cuda", "gpu"):
        return "cuda", []
    spec = spec.removeprefix("cuda:")
    try:
        ids = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--device takes cpu, cuda, or GPU ids like 0 or 0,1,2,3; got '{spec}'") from None
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise ValueError(f"--device: '{spec}' is not a list of distinct GPU ids")
    return "cuda", ids


def one_device(spec: str | None) -> torch.device:
    """The single device ``--device`` names for a one-process command (val, predict,
    plot): the first GPU it names; a ValueError where torch has none."""
    kind, ids = parse_device(spec)
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device asks for CUDA, but torch sees no GPU (use --device cpu)")
    return torch.device("cuda", ids[0] if ids else 0) if kind == "cuda" else torch.device("cpu")


def setup(kind: str, ids: list[int]) -> tuple[World, torch.device]:
    """Join the process group when torchrun started several processes; pick this one's device."""
    w = world()
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device asks for CUDA, but torch sees no GPU (use --device cpu)")
        if ids and not w.distributed:
            if ids[0] >= torch.cuda.device_count():
                raise ValueError(f"--device {ids[0]}: torch sees {torch.cuda.device_count()} GPU(s)")
            device = torch.device("cuda", ids[0])
        else:
            device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if w.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return w, device


def teardown(finished: bool) -> None:
    """Leave the process group.

    A DistributedDataParallel wrapper that outlives ``destroy_process_group`` keeps the
    gloo/NCCL backend alive until interpreter exit, where torch 2.14 tears it down
    half-joined and aborts the process ("terminate called without an active exception"),
    about one exit in five on CPU. So the wrappers are collected first, and a run that
    finished waits for every rank before anyone leaves; after a failure the others may
    be gone, and a barrier would hang."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # DDP's reducer hooks form reference cycles with the wrapper
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def barrier(w: World) -> None:
    if w.distributed:
        dist.barrier()


def broadcast(obj, w: World):
    """Rank 0's value of a picklable object, on every rank."""
    if not w.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def replicas_agree(model: torch.nn.Module, w: World) -> bool:
    """Whether every process holds the same parameters (DDP's promise, checked at the end
    of a run): each rank's per-tensor sums and absolute sums, compared exactly with rank 0's."""
    if not w.distributed:
        return True
    params = [p.detach().double() for p in model.parameters()]
    mine = torch.stack([torch.stack([p.sum(), p.abs().sum()]) for p in params]).flatten()
    if dist.get_backend() == "nccl":
        mine = mine.cuda()
    everyone = [torch.empty_like(mine) for _ in range(w.size)]
    dist.all_gather(everyone, mine)
    return all(torch.equal(everyone[0], other) for other in everyone[1:])


def launch(argv: list[str], ids: list[int]) -> int:
    """Re-run ``gelanc train`` under torchrun, one process per GPU id, on this machine."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(map(str, ids)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={len(ids)}",
           "-m", "gelanc", *argv]
    print("launching: " + " ".join(cmd[1:]), file=sys.stderr)
    return subprocess.call(cmd, env=env)


def log(w: World, msg: str) -> None:
    if w.main:
        print(msg, file=sys.stderr, flush=True)


def every_process_has_images(n: int, w: World, device: torch.device) -> bool:
    """Whether this batch is trained on: it has images here and, under DDP, in every
    process (each must run the same backward passes, or the gradient all-reduce waits
    forever; a batch whose images all failed to decode in one process is skipped by all)."""
    if not w.distributed:
        return n > 0
    import torch.distributed as dist

    flag = torch.tensor([float(n > 0)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gathered(items: list, w: World) -> list:
    """Every process's ``items``, concatenated (on every rank; one process: ``items``)."""
    if not w.distributed:
        return items
    import torch.distributed as dist

    lists: list = [None] * w.size
    dist.all_gather_object(lists, items)
    return [x for one in lists for x in one]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
