"""The dataset audit (i2f_fast.audit.audit): rows against predicted_risk, shards, resume, the
configuration check, torch.distributed with 2 gloo ranks, a rank killed mid-run, the command and its report."""
import json
import os
import socket
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp

from i2f_fast import InversionInfluence, cli
from i2f_fast.audit import TABLE_SCHEMA, AuditConfigError, audit, parse_defense, predicted_risk
from i2f_fast.audit import shards as shards_module
from i2f_fast.data import digits
from i2f_fast.models import lenet

from bad_input import check_clean_error

SIZE = 8  # 8×8 digits: D = 64, LeNet with 2×2 feature maps; every spectrum is tiny


def problem(n=7):
    return lenet(image_size=SIZE, generator=torch.Generator().manual_seed(0)).eval(), digits(n=n, image_size=SIZE)


def rows(table):
    return table.to_pylist()


@pytest.mark.parametrize("spec", ["gaussian:1e-4", "dp:clip=0.5,noise=1", "topk:0.1"])
def test_rows_are_the_predicted_risk_of_each_sample(spec):
    model, data = problem()
    result = audit(model, data, spec, chunk_size=3, progress=False)
    table = result.table
    assert table.schema.equals(TABLE_SCHEMA)
    assert table.column("index").to_pylist() == list(range(7))
    assert table.column("label").to_pylist() == data.labels.tolist()
    influence = InversionInfluence(model, data.images, data.labels, per_sample=True)
    lam = influence.spectrum().eigenvalues
    risk = predicted_risk(influence, spec)
    for name in ("rmse", "bias_rmse", "noise_rmse"):  # (the deterministic part comes back in the model's float32)
        torch.testing.assert_close(torch.tensor(table.column(name).to_pylist(), dtype=torch.float64),
                                   getattr(risk, name), rtol=1e-6, atol=0)
    for name, column in (("lambda_min", 0), ("lambda_max", -1)):
        found = torch.tensor(table.column(name).to_pylist(), dtype=torch.float64)
        torch.testing.assert_close(found, lam[:, column], rtol=1e-9, atol=0)
    assert all(table.column("exact").to_pylist()) and set(table.column("method").to_pylist()) <= {"spectral", "none"}
    assert result.config["defense"] == parse_defense(spec).spec


def test_per_batch_rows():
    model, data = problem()
    table = audit(model, data, "gaussian:1e-4", per_sample=False, batch_size=3, progress=False).table
    assert table.column("index").to_pylist() == [0, 1, 2]  # 3 + 3 + 1 samples, no padding
    assert table.column("label").null_count == 3
    for b, first in enumerate((0, 3, 6)):
        x, y = data.images[first : first + 3], data.labels[first : first + 3]
        expected = predicted_risk(InversionInfluence(model, x, y), "gaussian:1e-4").rmse
        assert table.column("rmse")[b].as_py() == pytest.approx(expected.item(), rel=1e-9)


def test_quantize_rows_do_not_depend_on_the_chunks():
    model, data = problem(4)
    a = audit(model, data, "quantize:4", chunk_size=1, progress=False).table
    b = audit(model, data, "quantize:4", chunk_size=3, progress=False).table
    assert rows(a) == rows(b) and not any(a.column("exact").to_pylist()) and min(a.column("stderr").to_pylist()) > 0


def test_resume_recomputes_only_missing_shards(tmp_path):
    model, data = problem()
    first = audit(model, data, out=tmp_path, chunk_size=2, progress=False)
    assert rows(pq.read_table(tmp_path / "results.parquet")) == rows(first.table)
    shards = sorted((tmp_path / "shards").glob("part-*.parquet"))
    assert len(shards) == 4  # 2 + 2 + 2 + 1
    lost = pq.read_table(shards[1]).num_rows
    shards[1].unlink()
    (tmp_path / "shards" / ".part-killed.parquet.x.tmp").write_bytes(b"half a file")  # a write cut by a kill
    again = audit(model, data, out=tmp_path, chunk_size=2, resume=True, progress=False)
    assert again.computed == lost
    assert rows(again.table) == rows(first.table)
    assert not list((tmp_path / "shards").glob(".*.tmp"))
    fresh = audit(model, data, out=tmp_path, chunk_size=2, progress=False)  # without resume: starts over
    assert fresh.computed == 7 and rows(fresh.table) == rows(first.table)


def test_out_of_another_configuration_is_refused(tmp_path):
    model, data = problem(3)
    audit(model, data, "gaussian:1e-4", out=tmp_path, progress=False)
    with pytest.raises(AuditConfigError, match=r"out .*another configuration \(differs in: defense\)"):
        audit(model, data, "gaussian:1e-3", out=tmp_path, resume=True, progress=False)
    with pytest.raises(AuditConfigError, match="differs in: dataset"):
        audit(model, digits(n=3, start=5, image_size=SIZE), "gaussian:1e-4", out=tmp_path, progress=False)


def test_merge_refuses_shards_of_two_configurations(tmp_path):
    model, data = problem(3)
    audit(model, data, "gaussian:1e-4", out=tmp_path / "a", chunk_size=2, progress=False)
    audit(model, data, "gaussian:1e-3", out=tmp_path / "b", chunk_size=2, progress=False)
    foreign = sorted((tmp_path / "b" / "shards").glob("part-*.parquet"))[0]
    mine = sorted((tmp_path / "a" / "shards").glob("part-*.parquet"))
    mine[0].unlink()
    foreign.rename(tmp_path / "a" / "shards" / foreign.name)
    with pytest.raises(AuditConfigError, match="another configuration; refusing to mix shards"):
        audit(model, data, "gaussian:1e-4", out=tmp_path / "a", chunk_size=2, resume=True, progress=False)


def test_merge_refuses_repeated_or_missing_indices():
    table = audit(*problem(3), progress=False).table
    with pytest.raises(AuditConfigError, match="index 1 is there more than once"):
        shards_module.merge_tables([table, table.slice(1, 1)], 3, None)
    with pytest.raises(AuditConfigError, match="1 of 3 indices are missing"):
        shards_module.merge_tables([table.slice(0, 2)], 3, None)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_any_torch_dataset():
    model, data = problem(3)
    plain = audit(model, Pairs(data.images, data.labels), progress=False).table
    assert rows(plain) == rows(audit(model, data, progress=False).table)


BAD = [
    pytest.param(dict(defense="laplace:1"), "defense", id="unknown-defense"),
    pytest.param(dict(defense="gaussian:-1"), "defense", id="negative-variance"),
    pytest.param(dict(objective="huber"), "objective", id="objective"),
    pytest.param(dict(batch_size=4), "batch_size", id="batch-size-per-sample"),
    pytest.param(dict(per_sample=False), "batch_size", id="batch-mode-without-size"),
    pytest.param(dict(per_sample=False, batch_size=4, defense="dp:clip=1,noise=1,batch=8"), "batch_size", id="dp-batch"),
    pytest.param(dict(resume=True), "resume", id="resume-without-out"),
    pytest.param(dict(chunk_size=0), "chunk_size", id="chunk-size"),
    pytest.param(dict(eps=1.0, eps_rel=1e-8), "eps_rel", id="both-dampings"),
    pytest.param(dict(dataset=digits(n=2, image_size=28)), "dataset samples", id="samples-do-not-fit"),
    pytest.param(dict(dataset=Pairs(torch.zeros(2, 1, SIZE, SIZE), [0, 12])), "dataset labels", id="label-past-outputs"),
    pytest.param(dict(dataset=[1, 2]), "dataset[0]", id="not-pairs"),
    pytest.param(dict(dataset=3), "dataset", id="not-a-dataset"),
]


@pytest.mark.parametrize("change, argument", BAD)
def test_bad_input(change, argument):
    model, data = problem(2)
    kwargs = dict(dict(dataset=data, defense="gaussian:1e-4"), **change)
    check_clean_error(lambda: audit(model, kwargs.pop("dataset"), kwargs.pop("defense"), progress=False, **kwargs), argument)


# ---------------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, out, die_after_first_shard):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    if die_after_first_shard and rank == 1:
        write = shards_module.ShardStore.write

        def write_then_die(self, table):
            write(self, table)
            os._exit(9)  # killed: no clean-up, no barrier

        shards_module.ShardStore.write = write_then_die
    model, data = problem()
    audit(model, data, out=out, chunk_size=2, progress=False)
    in_memory = audit(model, data, chunk_size=2, progress=False)  # no out: the ranks gather the rows
    assert in_memory.computed == 7
    if rank == 0:
        pq.write_table(in_memory.table, os.path.join(out, "in_memory.parquet"))
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_give_the_single_process_result(tmp_path):
    model, data = problem()
    single = audit(model, data, chunk_size=2, progress=False).table
    mp.start_processes(_rank_main, args=(2, _free_port(), str(tmp_path), False), nprocs=2, start_method="fork")
    merged = pq.read_table(tmp_path / "results.parquet")
    assert rows(merged) == rows(single)  # bit for bit
    assert rows(pq.read_table(tmp_path / "in_memory.parquet")) == rows(single)
    written = [pq.read_table(p).column("index").to_pylist() for p in sorted((tmp_path / "shards").glob("part-*.parquet"))]
    assert sorted(sum(written, [])) == list(range(7))  # each index in one shard, none padded


def test_a_rank_killed_mid_run_then_resume(tmp_path):
    model, data = problem()
    single = audit(model, data, chunk_size=2, progress=False).table
    with pytest.raises(Exception):  # rank 1 dies after its first shard; rank 0 cannot finish either
        mp.start_processes(_rank_main, args=(2, _free_port(), str(tmp_path), True), nprocs=2, start_method="fork")
    assert not (tmp_path / "results.parquet").exists()  # never a partial result
    done = [pq.read_table(p).num_rows for p in (tmp_path / "shards").glob("part-*.parquet")]
    assert 0 < sum(done) < 7
    resumed = audit(model, data, out=tmp_path, chunk_size=2, resume=True, progress=False)
    assert resumed.computed == 7 - sum(done)
    assert rows(resumed.table) == rows(single)


# ------------------------------------------------------------------------------------ command
def test_command_writes_tables_report_and_the_attack_check(tmp_path, capsys):
    cli.main(["audit", "--samples", "6", "--image-size", str(SIZE), "--out", str(tmp_path), "--check", "1",
              "--check-iterations", "5", "--quiet"])
    for name in ("results.parquet", "results.csv", "summary.json", "risk_histogram.png", "risk_by_class.png",
                 "most_exposed.png", "report.html", "audit-config.json"):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = pq.read_table(tmp_path / "results.parquet")
    assert summary["summary"]["overall"]["count"] == 6 == table.num_rows
    rmse = table.column("rmse").to_pylist()
    assert summary["summary"]["overall"]["q00"] == min(rmse) and summary["summary"]["overall"]["q100"] == max(rmse)
    checks = summary["attack_check"]
    assert [c["group"] for c in checks] == ["most exposed", "least exposed"]
    assert checks[0]["expected_rmse"] == min(rmse) and checks[1]["expected_rmse"] == max(rmse)
    assert all(c["local_rmse"] > 0 and c["global_rmse"] > 0 for c in checks)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "most exposed" in page
    assert (tmp_path / "results.csv").read_text().splitlines()[0].replace('"', "").split(",") == TABLE_SCHEMA.names
    assert "audited 6 samples" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag", [
    (["--defense", "magic:1"], "--defense"),
    (["--defense", "prune:2"], "--defense"),
    (["--root", "/nonexistent/folder", "--dataset", "mnist"], "--root"),
    (["--dataset", "mnist"], "--root"),
    (["--batch-size", "0"], "--batch-size"),
    (["--check", "-1"], "--check"),
])
def test_command_bad_input(tmp_path, argv, flag):
    with pytest.raises(SystemExit) as info:
        cli.main(["audit", "--samples", "2", "--image-size", str(SIZE), "--out", str(tmp_path), "--quiet", *argv])
    message = str(info.value)
    assert flag in message and "\n" not in message


def test_command_refuses_an_out_of_another_configuration(tmp_path):
    base = ["audit", "--samples", "2", "--image-size", str(SIZE), "--out", str(tmp_path), "--quiet", "--check", "0"]
    cli.main(base)
    with pytest.raises(SystemExit, match=rf"--out {tmp_path}: holds an audit with another configuration"):
        cli.main([*base, "--defense", "gaussian:1e-2", "--resume"])


def test_a_model_with_batchnorm_has_a_fingerprint():
    """BatchNorm keeps a 0-dim ``num_batches_tracked`` buffer; the fingerprint covers it (and changes with it)."""
    from i2f_fast.audit.core import model_fingerprint

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    before = model_fingerprint(model)
    model[1].num_batches_tracked += 1
    assert model_fingerprint(model) != before
