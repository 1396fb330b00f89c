"""The model, each client's private batches, and one FedSGD step."""
import torch
import torch.nn.functional as F

from i2f_fast.data import digits
from i2f_fast.models import lenet

IMAGE_SIZE = 8  # 8×8 digits: a batch of 4 is D = 256, its exact (spectral) prediction takes about a second on one core


def make_model() -> torch.nn.Module:
    """LeNet for 8×8 digits, the same initial weights on every node (the server's start)."""
    return lenet(image_size=IMAGE_SIZE, generator=torch.Generator().manual_seed(0)).eval()


def client_batch(partition_id: int, server_round: int, batch_size: int):
    """The batch ``(x (B, 1, 8, 8), y (B,))`` client ``partition_id`` trains on in round ``server_round``:
    the clients hold disjoint, consecutive slices of scikit-learn's digits."""
    start = (partition_id * 100 + (server_round - 1) * batch_size) % (1797 - batch_size)
    batch = digits(n=batch_size, start=start, image_size=IMAGE_SIZE)
    return batch.images, batch.labels


def sgd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """One plain SGD step on the mean cross-entropy of ``(x, y)`` (FedSGD: the update is −lr·gradient)."""
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return loss.item()
