"""The Flower client mod (i2f_fast.integrations.flower), in-process with Flower's own message objects:
FedSGD replies carry the batch's predicted risk, multi-step FedAvg is flagged, noise the client already
added shows in the update's risk, errors become error replies, other messages pass untouched."""
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from flwr.app import (  # flwr is in the development environment (extra i2f_fast[flower]): no skip
    DEFAULT_TTL, ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, MetricRecord, RecordDict,
)
from flwr.clientapp import ClientApp

from i2f_fast import InversionInfluence
from i2f_fast.audit.risk import predicted_risk
from i2f_fast.data import digits
from i2f_fast.integrations.flower import METRICS, ReconstructionRiskMod
from i2f_fast.models import mlp

SIZE = 8
LR = 0.05


def make_model():
    return mlp((1, SIZE, SIZE), hidden=(16,), init="xavier", generator=torch.Generator().manual_seed(0)).eval()


BATCH = digits(n=4, image_size=SIZE)


def batch_fn(msg, ctxt):
    return BATCH.images, BATCH.labels


def train_fn(steps=1, noise_std=0.0):
    """A ClientApp training function: ``steps`` SGD steps on the batch, optional Gaussian noise on the update."""

    def train(msg, ctxt):
        model = make_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=msg.content["config"]["lr"])
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(model(BATCH.images), BATCH.labels).backward()
            optimizer.step()
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise_std * LR * torch.randn(p.shape, generator=generator))
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": 4})})
        return Message(content, reply_to=msg)

    return train


def train_message(config=None, message_type=MessageType.TRAIN):
    content = RecordDict({"arrays": ArrayRecord(make_model().state_dict()), "config": ConfigRecord(config or {"lr": LR})})
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
                        created_at=time.time(), ttl=DEFAULT_TTL, message_type=message_type)  # as the SuperLink delivers it
    return Message(content=content, metadata=metadata)


def context():
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def batch_risk(spec):
    influence = InversionInfluence(make_model(), BATCH.images, BATCH.labels, per_sample=False)
    return influence, predicted_risk(influence, spec)


def test_fedsgd_reply_carries_the_predicted_risk_of_the_batch():
    mod = ReconstructionRiskMod(make_model, batch_fn, defense="gaussian:1e-4")
    app = ClientApp()
    app.train(mods=[mod])(train_fn())
    reply = app(train_message(), context())
    assert not reply.has_error()
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 4 and set(METRICS) <= set(metrics)
    _, risk = batch_risk("gaussian:1e-4")
    assert metrics["i2f-predicted-rmse"] == pytest.approx(risk.rmse.item(), rel=1e-6) and metrics["i2f-predicted-rmse"] > 0
    assert metrics["i2f-approximation"] == 0.0 and metrics["i2f-exact"] == 1.0
    # one SGD step: −Δθ/η is the batch's gradient up to float32 rounding, the attacker's error ≈ 0
    assert metrics["i2f-gradient-mismatch"] < 1e-4
    assert metrics["i2f-update-rmse"] < 1e-3 * metrics["i2f-predicted-rmse"]
    # the mod only adds metrics: the parameters are what the training function returned
    plain = train_fn()(train_message(), context()).content["arrays"].to_torch_state_dict()
    for name, value in reply.content["arrays"].to_torch_state_dict().items():
        assert torch.equal(value, plain[name])


def test_noise_the_client_added_is_what_the_update_risk_predicts():
    std = 1e-2
    mod = ReconstructionRiskMod(make_model, batch_fn, learning_rate=LR)
    reply = mod(train_message(), context(), train_fn(noise_std=std))
    metrics = reply.content["metrics"]
    influence, _ = batch_risk("none")
    generator = torch.Generator().manual_seed(1)
    noise = torch.cat([-std * torch.randn(p.shape, generator=generator).reshape(-1) for p in make_model().parameters()])
    expected = influence.i2f(noise).rmse.item()
    assert metrics["i2f-update-rmse"] == pytest.approx(expected, rel=1e-2)
    assert metrics["i2f-predicted-rmse"] == 0.0  # defense "none": nothing beyond the update


def test_multi_step_fedavg_is_flagged_as_an_approximation():
    mod = ReconstructionRiskMod(make_model, batch_fn, defense="gaussian:1e-4")
    reply = mod(train_message({"lr": LR, "local-steps": 5}), context(), train_fn(steps=5))
    metrics = reply.content["metrics"]
    assert metrics["i2f-approximation"] == 1.0
    assert 1e-4 < metrics["i2f-gradient-mismatch"] < 1.0  # the trajectory drifts from the first gradient


def test_other_messages_pass_untouched_and_errors_become_error_replies():
    mod = ReconstructionRiskMod(make_model, batch_fn)
    untouched = mod(train_message(message_type=MessageType.EVALUATE), context(), train_fn())
    assert "i2f-predicted-rmse" not in untouched.content["metrics"]
    no_lr = mod(train_message({"epochs": 1}), context(), train_fn())
    assert no_lr.has_error() and "'lr'" in no_lr.error.reason
    wrong_batch = ReconstructionRiskMod(make_model, lambda m, c: (BATCH.images.double(), BATCH.labels))
    reply = wrong_batch(train_message(), context(), train_fn())
    assert reply.has_error() and "x" in reply.error.reason and "float32" in reply.error.reason
    wrong_dp = ReconstructionRiskMod(make_model, batch_fn, defense="dp:clip=1,noise=1,batch=8")
    reply = wrong_dp(train_message(), context(), train_fn())
    assert reply.has_error() and "batch=8 must be the client's batch size 4" in reply.error.reason


def test_bad_arguments_and_missing_flwr(monkeypatch):
    for kwargs, argument in [(dict(defense="laplace:1"), "defense"), (dict(learning_rate=0.0), "learning_rate"),
                             (dict(local_steps=0), "local_steps"), (dict(objective="ssim"), "objective")]:
        with pytest.raises(ValueError, match=argument):
            ReconstructionRiskMod(make_model, batch_fn, **kwargs)
    with pytest.raises(TypeError, match="batch_fn"):
        ReconstructionRiskMod(make_model, None)
    monkeypatch.setitem(sys.modules, "flwr.app", None)
    with pytest.raises(ImportError, match=r"i2f_fast\[flower\]"):
        ReconstructionRiskMod(make_model, batch_fn)


def test_the_example_client_app_adds_the_metrics(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "flower"))
    from i2f_flower_example.client_app import app
    from i2f_flower_example.task import make_model as example_model

    content = RecordDict({"arrays": ArrayRecord(example_model().state_dict()),
                          "config": ConfigRecord({"lr": 0.1, "server-round": 1})})
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
                        created_at=time.time(), ttl=DEFAULT_TTL, message_type=MessageType.TRAIN)
    run_config = {"num-server-rounds": 3, "lr": 0.1, "batch-size": 4, "noise-variance": 1e-4}
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 1}, state=RecordDict(), run_config=run_config)
    reply = app(Message(content=content, metadata=metadata), ctx)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 4 and metrics["i2f-predicted-rmse"] > 0 and metrics["i2f-approximation"] == 0
    assert metrics["i2f-update-rmse"] < 1e-2 * metrics["i2f-predicted-rmse"]  # FedSGD as sent: the batch is exposed


def test_dp_defense_is_the_batch_risk_with_noise_std_z_c_over_b():
    spec = "dp:clip=0.5,noise=0.8,batch=4"
    mod = ReconstructionRiskMod(make_model, batch_fn, defense=spec, learning_rate=LR)
    state = make_model().state_dict()
    metrics = mod.assess(state, state, LR, 1, BATCH.images, BATCH.labels)
    _, risk = batch_risk(spec)
    assert metrics["i2f-predicted-rmse"] == pytest.approx(risk.rmse.item(), rel=1e-6)
    assert risk.bias_rmse.item() > 0 and risk.noise_rmse.item() > 0  # the clipping bias and the noise both enter
