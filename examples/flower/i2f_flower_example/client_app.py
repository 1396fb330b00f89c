"""The ClientApp: one FedSGD step per round, wrapped by i2f_fast's ReconstructionRiskMod, which adds the
predicted reconstruction risk of the round's batch to the reply's metrics."""
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from i2f_fast.integrations.flower import ReconstructionRiskMod

from .task import client_batch, make_model, sgd_step


def round_batch(msg: Message, context: Context):
    """The batch this client trains on in this round (what the mod assesses)."""
    config = msg.content["config"]
    return client_batch(int(context.node_config.get("partition-id", 0)), int(config["server-round"]),
                        int(context.run_config["batch-size"]))


def risk_mod(msg: Message, context: Context, call_next):
    """The mod, with the noise the server adds to the aggregate (run config ``noise-variance``)."""
    mod = ReconstructionRiskMod(make_model, round_batch, defense=f"gaussian:{context.run_config['noise-variance']}")
    return mod(msg, context, call_next)


app = ClientApp()


@app.train(mods=[risk_mod])
def train(msg: Message, context: Context) -> Message:
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = round_batch(msg, context)
    loss = sgd_step(model, x, y, float(msg.content["config"]["lr"]))
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord({"train-loss": loss, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
