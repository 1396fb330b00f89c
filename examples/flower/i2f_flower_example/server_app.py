"""The ServerApp: FedAvg over the clients' FedSGD updates; prints each round's predicted risk."""
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from .task import make_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(fraction_evaluate=0.0)
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(make_model().state_dict()),
        num_rounds=int(context.run_config["num-server-rounds"]),
        train_config=ConfigRecord({"lr": float(context.run_config["lr"])}),
    )
    for server_round, metrics in result.train_metrics_clientapp.items():
        print(f"round {server_round}: predicted attack RMSE {metrics['i2f-predicted-rmse']:.4g} under "
              f"gaussian:{context.run_config['noise-variance']}, {metrics['i2f-update-rmse']:.3g} for the update as sent "
              "(mean over clients, weighted by examples)")
