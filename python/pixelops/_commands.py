"""What the demo commands share beyond their arguments: `python -m pixelops bench / pixelcnn / train-mnist` ask
here, and so do the demos' run() functions for callers that skip the command line."""
from __future__ import annotations


def require_cuda(command: str, device) -> None:
    """A clear exit naming the command where `device` (a name or a torch.device) is CUDA and there is no GPU,
    or no CUDA kernels in this build."""
    from . import available_backends

    if str(device).startswith("cuda") and not available_backends()["cuda"]:
        raise SystemExit(f"{command} --device cuda: no CUDA GPU here, or this pixelops build has no CUDA kernels")
