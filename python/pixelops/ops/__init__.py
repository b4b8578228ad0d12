"""The ops' Python faces: argument checks in torch's words, the numpy path, and the hand-off of tensors to
pixelops._torch (loaded on first use, so that numpy users never import torch)."""
