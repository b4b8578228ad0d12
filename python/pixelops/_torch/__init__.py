"""The torch side of each op: kernels called on tensors, torch.library custom ops (with fake kernels and
autograd, for torch.compile and opcheck) and the lighter autograd.Function path used in eager mode.

Two ways into one pair of kernels, on purpose: a custom op costs some 10-30 us per eager call in PyTorch's
dispatcher, so eager calls take a plain autograd.Function, and only code being compiled takes the custom op.
Both share the same forward, setup_context and backward functions.
"""
# Modules that register ops; pixelops._torch_loader.load_all imports each.
OP_MODULES = ("relu",)
OP_MODULES += ("cross_entropy",)
OP_MODULES += ("conv2d",)
