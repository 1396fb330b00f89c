"""The fused attack loop against the reference loop: same results (same seed, same iterations),
its op and host-sync count per iteration under a documented ceiling, the flat parameter buffer,
the CUDA-graph switches (guarded off CUDA), and the library without its compiled extensions."""
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from i2f_fast import cg, invert
from i2f_fast.attack import _Objective
from i2f_fast.data import digits
from i2f_fast.flat import FlatLayout
from i2f_fast.models import lenet
from i2f_fast.testing import EXACT, LOOP, OpCounter

SIZE = 16

# Fused vs reference loop after ITERATIONS iterations, same seed: the iterates agree to these
# tolerances (float64: kernels differ by rounding only; float32: rounding of the fused kernels'
# double accumulation vs the reference's float32 sums, grown over the iterations).
ITERATIONS = 20

# Ops per attack iteration outside the model's forward/backward (OpCounter, views excluded), GS
# with TV: fused = grad_match + tv + the TV gradient's add_ + attack_step, plus the history record
# (2 ops every history_every = 10 iterations). Documented in benchmarks/README.md.
FUSED_OPS_CEILING = 5
REFERENCE_OVER_FUSED = 5  # the reference loop runs at least 5x as many ops


def _problem(dtype=torch.float64):
    batch = digits(n=1, image_size=SIZE)
    model = lenet(image_size=SIZE, generator=torch.Generator().manual_seed(0)).eval().to(dtype)
    x = batch.images.to(dtype)
    grads = torch.autograd.grad(F.cross_entropy(model(x), batch.labels), list(model.parameters()))
    return batch, model, x, [g.detach() for g in grads]


def _run(backend, attack="gs", restarts=1, dtype=torch.float64, iterations=ITERATIONS, **kw):
    batch, model, x, grads = _problem(dtype)
    kw.setdefault("tv", 1e-2)
    return invert(model, grads, batch.labels, x.shape, attack=attack, iterations=iterations, restarts=restarts,
                  bounds=batch.pixel_bounds if attack == "gs" else None, generator=torch.Generator().manual_seed(5),
                  progress=False, onednn=False, backend=backend, **kw)


@pytest.mark.parametrize("attack, restarts", [("gs", 1), ("dlg", 2)])
def test_fused_loop_matches_the_reference_loop(device_backend, attack, restarts):
    device, backend = device_backend
    if device != "cpu" or backend == "reference":
        pytest.skip("the LeNet problem is built on the CPU; the reference loop is the baseline")
    fused = _run(backend, attack, restarts)
    reference = _run("reference", attack, restarts)
    tol = LOOP[torch.float64]
    torch.testing.assert_close(fused.restarts, reference.restarts, **tol)
    torch.testing.assert_close(fused.history, reference.history, **tol)
    torch.testing.assert_close(fused.losses, reference.losses, **tol)
    assert fused.best == reference.best


def test_fused_loop_matches_the_reference_loop_in_float32():
    fused = _run("auto", "dlg", dtype=torch.float32)
    reference = _run("reference", "dlg", dtype=torch.float32)
    torch.testing.assert_close(fused.restarts, reference.restarts, **LOOP[torch.float32])


def _per_iteration(monkeypatch, backend, progress=False, n1=10, n2=30):
    """(ops, host syncs) per iteration outside the model's forward/backward: the difference of two
    runs of n1 and n2 iterations over n2 − n1, so set-up and the final scoring cancel out."""
    counter = OpCounter()
    original = _Objective._trial_with_pullback

    def paused(self, xs):  # the model's own work: forward, create-graph backward, flattening, Jᵀw
        with counter.paused():
            trial, pullback = original(self, xs)

        def pullback_paused(w):
            with counter.paused():
                return pullback(w)

        return trial, pullback_paused

    monkeypatch.setattr(_Objective, "_trial_with_pullback", paused)
    batch, model, x, grads = _problem()
    counts = []
    for n in (n1, n2):
        counter.ops.clear(), counter.views.clear()
        with counter:
            invert(model, grads, batch.labels, x.shape, attack="gs", iterations=n, tv=1e-2, bounds=batch.pixel_bounds,
                   progress=progress, onednn=False, backend=backend, generator=torch.Generator().manual_seed(0))
        counts.append((counter.kernels, counter.host_syncs))
    monkeypatch.undo()
    return [(b - a) / (n2 - n1) for a, b in zip(*counts)]


def test_fused_loop_op_count_stays_under_its_ceiling(monkeypatch):
    from i2f_fast.backend import unavailable_reason

    if unavailable_reason("native", torch.device("cpu")):
        pytest.skip("C++ extension not built")
    ops, syncs = _per_iteration(monkeypatch, "native")
    ref_ops, ref_syncs = _per_iteration(monkeypatch, "reference")
    assert ops <= FUSED_OPS_CEILING, ops
    assert ref_ops >= REFERENCE_OVER_FUSED * ops, (ref_ops, ops)
    assert syncs == 0 and ref_syncs == 0  # no .item() in the loop without a progress bar
    _, bar_syncs = _per_iteration(monkeypatch, "native", progress=True)
    assert bar_syncs <= 1 / 10 + 1e-9  # the bar reads the loss every 10 iterations


def test_backend_and_cuda_graph_arguments_are_checked():
    batch, model, x, grads = _problem()
    with pytest.raises(ValueError, match="backend must be one of"):
        invert(model, grads, batch.labels, x.shape, iterations=1, backend="fastest", progress=False)
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA tensors"):
        invert(model, grads, batch.labels, x.shape, iterations=1, cuda_graph=True, progress=False)
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA tensors"):
        cg(lambda v: v, torch.ones(1, 3), cuda_graph=True)


def test_cpu_runs_never_touch_cuda_graphs(monkeypatch):
    import i2f_fast.cuda_graphs as cuda_graphs

    def fail(*args, **kwargs):
        raise AssertionError("GraphedStep built for a CPU run")

    monkeypatch.setattr(cuda_graphs, "GraphedStep", fail)
    _run("auto", iterations=3)
    cg(lambda v: 2 * v, torch.ones(2, 5, dtype=torch.float64))


# ------------------------------------------------------------------------------------ flat buffer
def test_flat_layout_views_write_through_and_flatten_into_a_buffer():
    shapes = [(3, 2), (4,), (), (2, 1, 2)]
    layout = FlatLayout(shapes)
    assert layout.numel == 6 + 4 + 1 + 4 and layout.offsets == [0, 6, 10, 11]
    flat = layout.empty(2, dtype=torch.float64)
    parts = [torch.randn(2, *s, dtype=torch.float64) for s in shapes]
    out = layout.flatten(parts, batch_dims=1, out=flat)
    assert out.data_ptr() == flat.data_ptr()
    for view, part in zip(layout.views(flat), parts):
        assert torch.equal(view, part)
    layout.views(flat)[1].zero_()
    assert not flat[:, 6:10].any()
    assert torch.equal(layout.expand_per_tensor(torch.arange(4.0)), torch.tensor([0.0] * 6 + [1.0] * 4 + [2.0] + [3.0] * 4))
    with pytest.raises(ValueError, match="flat vector has 3 entries"):
        layout.views(torch.zeros(3))
    with pytest.raises(ValueError, match=r"tensors\[1\] has shape"):
        layout.flatten([torch.zeros(3, 2), torch.zeros(5), torch.zeros(()), torch.zeros(2, 1, 2)])


# --------------------------------------------------------------------------------- CUDA graphs
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@cuda_only
def test_graphed_attack_matches_the_eager_loop():
    batch, model, x, grads = _problem()
    model, x, grads = model.cuda(), x.cuda(), [g.cuda() for g in grads]
    kw = dict(attack="gs", iterations=30, tv=1e-2, bounds=tuple(b.cuda() for b in batch.pixel_bounds),
              progress=False, init=torch.randn(1, *x.shape, dtype=x.dtype, device="cuda"))
    graphed = invert(model, grads, batch.labels.cuda(), x.shape, cuda_graph=True, **kw)
    eager = invert(model, grads, batch.labels.cuda(), x.shape, cuda_graph=False, **kw)
    torch.testing.assert_close(graphed.restarts, eager.restarts, **LOOP[torch.float64])
    torch.testing.assert_close(graphed.history, eager.history, **LOOP[torch.float64])


class _HostReadingNet(nn.Module):
    """A model whose forward reads a value on the host: it cannot be captured."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        h = x.flatten(1)
        if h.abs().max().item() > 1e6:
            h = h / 2
        return self.fc(h)


@cuda_only
def test_uncapturable_attack_falls_back_to_eager_with_a_logged_reason(caplog):
    model = _HostReadingNet().double().cuda().eval()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, device="cuda")
    y = torch.tensor([1], device="cuda")
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    init = torch.randn(1, 1, 1, 4, 4, dtype=torch.float64, device="cuda")
    with caplog.at_level(logging.WARNING, logger="i2f_fast"):
        graphed = invert(model, grads, y, x.shape, attack="dlg", iterations=12, init=init, progress=False)
    assert "runs eagerly" in caplog.text
    eager = invert(model, grads, y, x.shape, attack="dlg", iterations=12, init=init, progress=False, cuda_graph=False)
    torch.testing.assert_close(graphed.restarts, eager.restarts, **EXACT)


@cuda_only
def test_graphed_cg_matches_the_eager_solve():
    g = torch.Generator(device="cuda").manual_seed(0)
    M = torch.randn(3, 40, 40, dtype=torch.float64, device="cuda", generator=g)
    A = M @ M.transpose(1, 2) + 0.5 * torch.eye(40, dtype=torch.float64, device="cuda")
    b = torch.randn(3, 40, dtype=torch.float64, device="cuda", generator=g)

    def matvec(v):
        return torch.bmm(A, v.unsqueeze(2)).squeeze(2)

    graphed = cg(matvec, b, eps=0.1, cuda_graph=True, check_every=10)
    eager = cg(matvec, b, eps=0.1, cuda_graph=False, check_every=10)
    torch.testing.assert_close(graphed.x, eager.x, rtol=1e-9, atol=1e-12)
    assert torch.equal(graphed.iterations, eager.iterations) and bool(graphed.converged.all())


# --------------------------------------------------------------------------- without extensions
NO_EXT_PROBE = (
    "import sys\n"
    "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
    "import torch, i2f_fast\n"
    "from i2f_fast.ops import attack_step, grad_match, tv\n"
    "print('RESOLVED', i2f_fast.backend.resolve('cpu'))\n"
    "loss, g = grad_match(torch.ones(2, 3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))\n"
    "value, _ = tv(torch.zeros(1, 1, 2, 2))\n"
    "x = torch.zeros(1, 4)\n"
    "one = torch.tensor(1.0)\n"
    "attack_step(x, torch.ones(1, 4), torch.zeros(1, 4), torch.zeros(1, 4), 0.5 * one, one, one, signed=True)\n"
    "model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))\n"
    "grads = [torch.zeros_like(p) for p in model.parameters()]\n"
    "res = i2f_fast.invert(model, grads, torch.tensor([0]), (1, 4), iterations=3, progress=False)\n"
    "print('VALUES', loss.tolist(), value.item(), round(x[0, 0].item(), 6), tuple(res.x.shape))\n"
)


def test_fused_ops_and_invert_work_without_the_extensions(tmp_path):
    from test_backend import _package_copy, _run_python

    root = _package_copy(tmp_path)
    out = _run_python(NO_EXT_PROBE, root)
    assert out.returncode == 0, out.stderr
    assert "RESOLVED reference" in out.stdout
    assert "VALUES [0.0, 0.0] 0.0 -1.581138 (1, 4)" in out.stdout


# ------------------------------------------------- GraphedStep's state machine, CUDA faked out
class _FakeCuda:
    """Stands in for torch.cuda: streams are inert, a captured step is recorded, not run."""

    def __init__(self, monkeypatch, capture_error=None):
        import contextlib

        self.capturing, self.captured, self.replays, self.modes = False, 0, 0, []
        fake = self

        class Graph:
            def replay(self):
                fake.replays += 1

        @contextlib.contextmanager
        def graph(_g):
            fake.capturing = True
            try:
                yield
                if capture_error is not None:
                    raise capture_error
            finally:
                fake.capturing = False

        class Stream:
            def __init__(self, device=None):
                pass

            def wait_stream(self, other):
                pass

        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
        monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", self.modes.append)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


def _step_counter(fake, reads_host=False):
    import warnings

    runs = []

    def step():
        if fake.capturing:
            fake.captured += 1
            return
        if not runs:  # torch's notice on entering sync-debug mode: not a host read
            warnings.warn("Synchronization debug mode is a prototype feature and does not yet detect all "
                          "synchronizing operations")
        if reads_host:
            warnings.warn("called a synchronizing CUDA operation")
        runs.append(1)

    return step, runs


def test_graphed_step_warms_up_captures_once_then_replays(monkeypatch):
    from i2f_fast.cuda_graphs import GraphedStep

    fake = _FakeCuda(monkeypatch)
    step, runs = _step_counter(fake)
    graphed = GraphedStep(step, "test step", torch.device("cuda", 0), warmup=3)
    for _ in range(10):
        graphed()
    assert len(runs) == 3 and fake.captured == 1 and fake.replays == 7  # every call is one iteration
    assert graphed.graph is not None and graphed.fallback_reason is None
    assert fake.modes == ["warn", 0]  # the first warm-up call probes for host reads, then restores


@pytest.mark.filterwarnings("ignore:called a synchronizing")  # the eager calls after the fallback
@pytest.mark.parametrize("why", ["reads_host", "capture_fails"])
def test_graphed_step_falls_back_to_eager_with_a_logged_reason(monkeypatch, caplog, why):
    from i2f_fast.cuda_graphs import GraphedStep

    fake = _FakeCuda(monkeypatch, capture_error=RuntimeError("operation not permitted when stream is capturing")
                     if why == "capture_fails" else None)
    step, runs = _step_counter(fake, reads_host=why == "reads_host")
    graphed = GraphedStep(step, "test step", torch.device("cuda", 0), warmup=2)
    with caplog.at_level(logging.WARNING, logger="i2f_fast"):
        for _ in range(6):
            graphed()
    assert len(runs) == 6 and fake.replays == 0 and graphed.graph is None  # every iteration ran, eagerly
    assert "test step runs eagerly" in caplog.text
    assert ("reads the host" if why == "reads_host" else "capture failed") in graphed.fallback_reason


class _ReplayByRerunning:
    """A GraphedStep whose "graph" re-runs the body: exercises the graphed loops' bookkeeping
    (device-side schedule counter, fixed output tensors, in-place state) on the CPU."""

    def __init__(self, step, name, device, warmup=3):
        self.step = step

    def __call__(self):
        self.step()


def test_graphed_loop_bookkeeping_matches_the_eager_loops(monkeypatch):
    import i2f_fast.cuda_graphs as cuda_graphs

    eager_attack = _run("auto", "gs", iterations=12)
    A = torch.randn(2, 30, 30, dtype=torch.float64)
    A = A @ A.transpose(1, 2) + torch.eye(30, dtype=torch.float64)
    b = torch.randn(2, 30, dtype=torch.float64)

    def matvec(v):
        return torch.einsum("bij,bj->bi", A, v)

    eager_cg = cg(matvec, b, check_every=10)
    monkeypatch.setattr(cuda_graphs, "GraphedStep", _ReplayByRerunning)
    monkeypatch.setattr(cuda_graphs, "wanted", lambda device, requested: True)
    graphed_attack = _run("auto", "gs", iterations=12)
    graphed_cg = cg(matvec, b, check_every=10)
    torch.testing.assert_close(graphed_attack.restarts, eager_attack.restarts, **EXACT)
    torch.testing.assert_close(graphed_attack.history, eager_attack.history, **EXACT)
    torch.testing.assert_close(graphed_cg.x, eager_cg.x, **EXACT)
    assert torch.equal(graphed_cg.iterations, eager_cg.iterations)
