"""Small float64 models that exercise every node rule of the engine (python_tests/test_engine*.py)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from i2f_fast import models


def lenet(dtype=torch.float64):
    """The paper's sigmoid LeNet on 1×8×8 inputs."""
    return models.lenet(1, 8, num_classes=4, generator=torch.Generator().manual_seed(0)).to(dtype).eval()


class ReluPoolCNN(nn.Module):
    """ReLU / leaky ReLU CNN with max-pool, a grouped dilated conv, avg-pool and functional calls."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, bias=False)
        self.head = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.leaky_relu(self.conv2(h), 0.2)
        h = nn.functional.avg_pool2d(h, 2)
        return self.head(h.view(h.size(0), -1))


def relu_cnn(dtype=torch.float64):
    torch.manual_seed(4)
    return ReluPoolCNN().to(dtype).eval()


def mlp(activation: nn.Module, dtype=torch.float64):
    """5 → 7 → 6 → 3 MLP with the given activation."""
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(5, 7), activation, nn.Linear(7, 6), activation, nn.Linear(6, 3)).to(dtype).eval()


class ResidualBNNet(nn.Module):
    """Conv + BatchNorm (eval, non-trivial running statistics) + residual add + concatenation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(2 * 4 * 4, 3)
        for bn in (self.bn, self.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.2, 0.2)

    def forward(self, x):
        h = torch.relu(self.bn(self.stem(x)))
        h = torch.relu(h + self.bn2(self.conv(h)))
        h = self.pool(h)
        return self.head(torch.cat([h, h * 0.5], 1).flatten(1))


def residual_bn(dtype=torch.float64):
    torch.manual_seed(6)
    return ResidualBNNet().to(dtype).eval()


class TinyViT(nn.Module):
    """Patch embedding, learned position embedding, one pre-norm transformer block, mean pooling."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.pos = nn.Parameter(0.1 * torch.randn(1, 4, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return self.head(t.mean(1))


def tiny_vit(dtype=torch.float64):
    torch.manual_seed(7)
    return TinyViT().to(dtype).eval()


ENGINE_MODELS = {
    "lenet": (lenet, (1, 8, 8), 4),
    "relu_cnn": (relu_cnn, (2, 8, 8), 3),
    "mlp_gelu": (lambda dtype=torch.float64: mlp(nn.GELU(), dtype), (5,), 3),
    "residual_bn": (residual_bn, (1, 4, 4), 3),
    "tiny_vit": (tiny_vit, (1, 8, 8), 3),
}


def engine_problem(name, n, dtype=torch.float64):
    build, shape, classes = ENGINE_MODELS[name]
    model = build(dtype)
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(11), dtype=dtype)
    y = torch.arange(n) % classes
    return model, x, y
