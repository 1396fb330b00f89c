"""InversionJacobian products against the dense float64 jacrev Jacobian."""
import pytest
import torch
import torch.nn as nn

from i2f_fast import InversionJacobian
from i2f_fast.operators import STRATEGIES, flatten_tensors, unflatten_tensors
from i2f_fast.testing import assert_close

from conftest import dense_jacobian, make_problem, per_sample_jacobians


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("n", [1, 3])
def test_products_match_dense_jacobian(strategy, name, n):
    model, x, y = make_problem(name, n)
    J = dense_jacobian(model, x, y)
    op = InversionJacobian(model, x, y, strategy=strategy)
    assert op.num_params == J.shape[0] and op.input_shape == tuple(x.shape)
    v = torch.randn(x.shape, dtype=x.dtype)
    vk = torch.randn(4, *x.shape, dtype=x.dtype)
    u = torch.randn(op.num_params, dtype=x.dtype)
    uk = torch.randn(4, op.num_params, dtype=x.dtype)
    scale = J.abs().max().item()
    assert_close(op.jvp(v), J @ v.reshape(-1), scale=scale)
    assert_close(op.jvp(vk), vk.reshape(4, -1) @ J.T, scale=scale)
    assert_close(op.vjp(u).reshape(-1), J.T @ u, scale=scale)
    assert_close(op.vjp(uk).reshape(4, -1), uk @ J, scale=scale)
    G = J.T @ J
    assert_close(op.gram(v).reshape(-1), G @ v.reshape(-1), scale=scale**2)
    assert_close(op.gram(vk).reshape(4, -1), vk.reshape(4, -1) @ G, scale=scale**2)
    assert op.gram(vk).shape == vk.shape and op.vjp(u).shape == x.shape


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_per_sample_products_match_per_sample_jacobians(strategy):
    model, x, y = make_problem("cnn", 3)
    Js = per_sample_jacobians(model, x, y)
    op = InversionJacobian(model, x, y, per_sample=True, strategy=strategy)
    vk = torch.randn(2, *x.shape, dtype=x.dtype)
    uk = torch.randn(2, 3, op.num_params, dtype=x.dtype)
    jv, jtu, gram = op.jvp(vk), op.vjp(uk), op.gram(vk)
    assert jv.shape == (2, 3, op.num_params) and jtu.shape == vk.shape and gram.shape == vk.shape
    for n, J in enumerate(Js):
        s = J.abs().max().item()
        assert_close(jv[:, n], vk[:, n].reshape(2, -1) @ J.T, scale=s)
        assert_close(jtu[:, n].reshape(2, -1), uk[:, n] @ J, scale=s)
        assert_close(gram[:, n].reshape(2, -1), vk[:, n].reshape(2, -1) @ (J.T @ J), scale=s * s)


def test_gradient_is_the_clean_parameter_gradient():
    model, x, y = make_problem("cnn", 2)
    op = InversionJacobian(model, x, y)
    loss = nn.functional.cross_entropy(model(x), y)
    g = flatten_tensors(torch.autograd.grad(loss, list(model.parameters())))
    assert_close(op.gradient, g)
    assert_close(op.loss, loss.detach())


def test_list_input_for_vjp_and_flatten_roundtrip():
    model, x, y = make_problem("mlp", 2)
    op = InversionJacobian(model, x, y)
    u = torch.randn(op.num_params, dtype=x.dtype)
    parts = op.unflatten(u)
    assert [p.shape for p in parts] == [p.shape for p in model.parameters()]
    assert_close(op.flatten(parts), u)
    assert_close(op.vjp(parts), op.vjp(u))
    uk = torch.randn(3, op.num_params, dtype=x.dtype)
    assert_close(op.vjp(op.unflatten(uk)), op.vjp(uk))


def test_frozen_parameters_are_excluded():
    model, x, y = make_problem("mlp", 2)
    model[0].bias.requires_grad_(False)
    op = InversionJacobian(model, x, y)
    assert op.num_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "0.bias" not in op.param_names


def test_unflatten_rejects_wrong_length():
    with pytest.raises(ValueError, match="entries"):
        unflatten_tensors(torch.zeros(5), [torch.Size([2, 2])])


def test_custom_loss_fn():
    model, x, _ = make_problem("mlp", 2)
    target = torch.randn(2, 3, dtype=x.dtype)
    op = InversionJacobian(model, x, target, loss_fn=nn.functional.mse_loss)
    v = torch.randn(x.shape, dtype=x.dtype)
    params = dict(model.named_parameters())

    def flat_grad(xx):
        loss = nn.functional.mse_loss(torch.func.functional_call(model, params, (xx,)), target)
        return flatten_tensors(torch.autograd.grad(loss, list(params.values()), create_graph=True))

    expected = torch.autograd.functional.jvp(flat_grad, x, v)[1]
    assert_close(op.jvp(v), expected)


class TestBadInput:
    def test_x_without_batch_dimension(self):
        model, x, y = make_problem("mlp", 1)
        with pytest.raises(ValueError, match="batch dimension"):
            InversionJacobian(model, x[0], y)

    def test_nonfinite_x(self):
        model, x, y = make_problem("mlp", 2)
        x[0, 0] = float("nan")
        with pytest.raises(ValueError, match="x contains NaN"):
            InversionJacobian(model, x, y)

    def test_labels_out_of_range(self):
        model, x, _ = make_problem("mlp", 2)
        with pytest.raises(ValueError, match=r"y must lie in \[0, "):
            InversionJacobian(model, x, torch.tensor([0, 3]))

    def test_label_count(self):
        model, x, _ = make_problem("mlp", 2)
        with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
            InversionJacobian(model, x, torch.tensor([0]))

    def test_no_trainable_parameters(self):
        model, x, y = make_problem("mlp", 2)
        model.requires_grad_(False)
        with pytest.raises(ValueError, match="no trainable parameters"):
            InversionJacobian(model, x, y)

    def test_dtype_mismatch(self):
        model, x, y = make_problem("mlp", 2)
        with pytest.raises(TypeError, match="x is torch.float32"):
            InversionJacobian(model, x.float(), y)

    def test_per_sample_with_batchnorm_in_training_mode(self):
        model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)).double().train()
        x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
        with pytest.raises(ValueError, match="BatchNorm layer '1' in training mode"):
            InversionJacobian(model, x, y, per_sample=True)
        InversionJacobian(model.eval(), x, y, per_sample=True)

    def test_training_mode_model_is_used_as_given_and_probed_without_side_effects(self):
        model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)).double().train()
        x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
        before = {k: v.clone() for k, v in model.state_dict().items()}
        op = InversionJacobian(model, x, y)
        op.gram(torch.randn(2, *x.shape, dtype=x.dtype))  # batched products build more graphs
        assert model.training and model[1].training
        for k, v in model.state_dict().items():  # running statistics and num_batches_tracked untouched
            assert torch.equal(v, before[k]), k
        with pytest.raises(ValueError, match=r"y must lie in \[0, "):
            InversionJacobian(model, x, torch.tensor([0, 1, 2, 3]))

    def test_per_sample_with_dropout_in_training_mode(self):
        model = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.5), nn.Linear(5, 3)).double().train()
        x, y = torch.randn(2, 6, dtype=torch.float64), torch.tensor([0, 1])
        with pytest.raises(ValueError, match="Dropout layer '1' in training mode"):
            InversionJacobian(model, x, y, per_sample=True)

    def test_func_strategy_needs_a_functional_forward(self):
        model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)).double().train()
        x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
        with pytest.raises(ValueError, match="strategy='func' needs a functional forward"):
            InversionJacobian(model, x, y, strategy="func")

    def test_unknown_strategy(self):
        model, x, y = make_problem("mlp", 2)
        with pytest.raises(ValueError, match="strategy must be one of"):
            InversionJacobian(model, x, y, strategy="magic")

    def test_wrong_tangent_shapes(self):
        model, x, y = make_problem("mlp", 2)
        op = InversionJacobian(model, x, y)
        with pytest.raises(ValueError, match="v must have shape"):
            op.jvp(torch.zeros(3, 6, dtype=x.dtype))
        with pytest.raises(ValueError, match="u must have shape"):
            op.vjp(torch.zeros(op.num_params + 1, dtype=x.dtype))
        with pytest.raises(ValueError, match="u has 1 tensors"):
            op.vjp([torch.zeros(8, 6, dtype=x.dtype)])


@pytest.mark.parametrize("onednn", [True, False])
def test_conv_kernel_choice_gives_the_same_products_and_restores_the_flag(onednn):
    model, x, y = make_problem("cnn", 2)
    J = dense_jacobian(model, x, y)
    op = InversionJacobian(model, x, y, onednn=onednn)
    assert op.onednn is onednn or not torch.backends.mkldnn.is_available()
    v = torch.randn(x.shape, dtype=x.dtype)
    assert_close(op.gram(v).reshape(-1), J.T @ J @ v.reshape(-1), scale=J.abs().max().item() ** 2)
    assert torch.backends.mkldnn.enabled, "the global oneDNN flag must be restored"


def test_conv_kernel_autotune_is_cached_per_signature():
    from i2f_fast import conv_kernels

    model, x, y = make_problem("cnn", 1)
    conv_kernels.CHOICES.clear()
    first = InversionJacobian(model, x, y)
    assert len(conv_kernels.CHOICES) == (1 if torch.backends.mkldnn.is_available() else 0)
    assert InversionJacobian(model, x, y).onednn == first.onednn
    assert len(conv_kernels.CHOICES) <= 1
    assert InversionJacobian(*make_problem("mlp", 1)).onednn == torch.backends.mkldnn.enabled  # no convolutions


@pytest.mark.parametrize("per_sample", [False, True])
def test_model_with_batchnorm_buffers_in_eval_mode(per_sample):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x, y = torch.randn(3, 6, dtype=torch.float64), torch.tensor([0, 2, 1])
    op = InversionJacobian(model, x, y, per_sample=per_sample)
    vk = torch.randn(2, *x.shape, dtype=x.dtype)
    got = op.gram(vk)
    Js = per_sample_jacobians(model, x, y) if per_sample else [dense_jacobian(model, x, y)]
    for n, J in enumerate(Js):
        v = vk[:, n] if per_sample else vk
        out = got[:, n] if per_sample else got
        assert_close(out.reshape(2, -1), v.reshape(2, -1) @ (J.T @ J), scale=J.abs().max().item() ** 2)


class TinyResidual(nn.Module):
    """Conv → BatchNorm (eval) → in-place ReLU → residual add → avg-pool → Linear (a ResNet block)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x))) + x
        return self.head(torch.tanh(h).mean(dim=(2, 3)))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("per_sample", [False, True])
def test_residual_block_with_inplace_relu_and_batchnorm(strategy, per_sample):
    torch.manual_seed(5)
    model = TinyResidual().double()
    model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    x, y = torch.randn(2, 2, 5, 5, dtype=torch.float64), torch.tensor([0, 2])
    op = InversionJacobian(model, x, y, per_sample=per_sample, strategy=strategy)
    vk = torch.randn(3, *x.shape, dtype=x.dtype)
    Js = per_sample_jacobians(model, x, y) if per_sample else [dense_jacobian(model, x, y)]
    got_k, got_1 = op.gram(vk), op.gram(vk[0])
    for n, J in enumerate(Js):
        v = vk[:, n] if per_sample else vk
        out = got_k[:, n] if per_sample else got_k
        one = got_1[n] if per_sample else got_1
        scale = J.abs().max().item() ** 2
        assert_close(out.reshape(3, -1), v.reshape(3, -1) @ (J.T @ J), scale=scale)
        assert_close(one.reshape(-1), (J.T @ J) @ v[0].reshape(-1), scale=scale)


@pytest.mark.parametrize("strategy", ["auto", "double_backward"])
def test_batched_products_of_a_training_mode_batchnorm_model(strategy):
    """Batch statistics are part of the function: products match the dense Jacobian of the
    training-mode loss, batched tangents included (looped, since the forward is not functional)."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double().train()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    op = InversionJacobian(model, x, y, strategy=strategy)
    params = list(model.parameters())

    def flat_grad(xx):  # plain autograd: torch.func cannot run a training-mode BatchNorm
        loss = nn.functional.cross_entropy(model(xx), y)
        return flatten_tensors(torch.autograd.grad(loss, params, create_graph=True))

    J = torch.autograd.functional.jacobian(flat_grad, x).reshape(op.num_params, -1)
    vk = torch.randn(3, *x.shape, dtype=x.dtype)
    uk = torch.randn(3, op.num_params, dtype=x.dtype)
    scale = J.abs().max().item()
    assert_close(op.gram(vk).reshape(3, -1), vk.reshape(3, -1) @ (J.T @ J), scale=scale**2)
    assert_close(op.vjp(uk).reshape(3, -1), uk @ J, scale=scale)
