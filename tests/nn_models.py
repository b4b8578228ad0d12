"""Small models shared by the nn tests: the same architecture built with torch.nn modules, seeded."""
import torch


def small_cnn(seed=0, dtype=torch.float32, device="cpu"):
    """conv -> ReLU -> conv (stride 2) -> ReLU -> linear; 1x12x12 images, 10 classes."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 6 * 6, 10),
    ).to(device=device, dtype=dtype)


def batch(n=8, seed=1, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return x, y
