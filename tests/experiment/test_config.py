from pathlib import Path

import pytest

from fedtempo.errors import ConfigError
from fedtempo.experiment.config import (
    SERVER_CONFIGS,
    ExperimentConfig,
    apply_overrides,
    load,
    parse_override,
    to_dict,
    validate,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_default_toml_spells_out_the_embedded_default() -> None:
    assert load(CONFIGS / "default.toml") == ExperimentConfig() == load(None)


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.rglob("*.toml")), ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_every_shipped_config_validates(path: Path) -> None:
    load(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "server.algorithm=fedx",
            "server.algorithm: bad value 'fedx' (allowed: 'fedavg', 'fedprox'",
        ),
        ("servr.rounds=3", "servr: unknown key"),
        ("server.round=3", "server.round: unknown key"),
        ("partition.num_clients=0", "partition.num_clients: input should be greater than"),
        ("train.lr=-0.1", "train.lr: input should be greater than 0"),
        ("partition.scheme=natural", "partition.scheme: 'natural' needs"),
        ("model.name=resnet", "model.name: bad value 'resnet'"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_parse_toml_values() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=0.5") == (["a"], 0.5)
    assert parse_override("a=fedprox") == (["a"], "fedprox")
    assert parse_override('a="x y"') == (["a"], "x y")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("nonsense")
    c = load(None, ["server.rounds=7", "devices.compute.sigma=0"])
    assert c.server.rounds == 7 and c.devices.compute.sigma == 0
    assert c.devices.compute.median_flops == 2e9  # the rest of the table keeps its defaults


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load(bad)


@pytest.mark.parametrize(
    ("algorithm", "override", "message"),
    [
        ("asyncfeded", "server.asyncfeded.epsilon=0", "server.asyncfeded.epsilon: input should"),
        ("asyncfeded", "server.asyncfeded.k_max=0", "server.asyncfeded.k_max: input should be"),
        ("fedbuff", "server.fedbuff.buffer_size=0", "server.fedbuff.buffer_size: input should"),
        ("asyncfeded", "server.asyncfeded.k_init=30", "k_init: 30 is above k_max = 20"),
        ("fedasync", "server.fedasync.staleness=linear", "server.fedasync.staleness: bad value"),
    ],
)
def test_async_hyperparameters_out_of_range(algorithm: str, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, [f"server.algorithm={algorithm}", "server.max_updates=10", override])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["server.algorithm=fedbuff", "server.max_updates=5", "server.deadline=3"], "deadline"),
        (["server.algorithm=fedbuff", "server.max_updates=5", "server.rounds=3"], "rounds"),
        (["server.algorithm=asyncfeded", "server.max_updates=5", "server.mu=0.1"], "mu"),
        (["server.algorithm=fedavg", "server.concurrency=4"], "concurrency"),
        (["server.algorithm=fedavg", "server.fedbuff.buffer_size=4"], "fedbuff"),
        (["server.algorithm=fedprox", "server.pruning.ratio=0.5"], "pruning"),
        (["server.algorithm=splitfed", "model.name=cnn-s", "server.server_lr=2"], "server_lr"),
        (["server.algorithm=pruned", "server.split.planner=plain"], "split"),
    ],
)
def test_a_key_of_another_algorithm_is_rejected_with_its_path(
    overrides: list[str], message: str
) -> None:
    algorithm = overrides[0].split("=")[1]
    with pytest.raises(ConfigError) as info:
        load(None, overrides)
    text = str(info.value)
    assert f"server.{message}: does not apply to server.algorithm = {algorithm!r}" in text
    assert "its keys: " in text


def test_sections_the_run_does_not_read_are_rejected() -> None:
    mafl = {
        "server": {"algorithm": "mafl"},
        "tasks": [{"name": "a", "data": {"dataset": "digits"}}],
        "mafl": {"scheduler": "round-robin"},
    }
    validate(mafl)  # the sections it reads are fine
    for key, table in (("train", {"lr": 0.3}), ("model", {"name": "logreg"})):
        with pytest.raises(
            ConfigError, match=rf"{key}: does not apply to server.algorithm = 'mafl'"
        ):
            validate({**mafl, key: table})
    with pytest.raises(ConfigError, match=r"mafl: applies to server.algorithm = 'mafl' only"):
        validate({"mafl": {"rounds": 3}})


@pytest.mark.parametrize("algorithm", list(SERVER_CONFIGS))
def test_a_resolved_config_reads_back_to_itself(algorithm: str) -> None:
    data: dict = {"server": {"algorithm": algorithm}}
    if algorithm == "mafl":
        data["tasks"] = [{"name": "a"}]
    if algorithm in ("fedasync", "fedbuff", "asyncfeded"):
        data["server"]["max_updates"] = 5
    if algorithm == "pruned":
        data["partition"] = {"client_test_fraction": 0.2}
        data["devices"] = {"uplink": {"kind": "wireless"}}
    config = validate(data)
    assert validate(to_dict(config)) == config


def test_async_run_needs_a_stop() -> None:
    with pytest.raises(ConfigError, match=r"needs server\.max_updates or stop\.virtual_time"):
        load(None, ["server.algorithm=fedbuff"])


def test_extends_lays_a_file_over_its_base(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(
        'name = "base"\n[server]\nrounds = 7\nclients_per_round = 3\n'
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.toml").write_text(
        'extends = "../base.toml"\nname = "child"\n[server]\nrounds = 9\n'
    )
    c = load(sub / "child.toml")
    assert (c.name, c.server.rounds, c.server.clients_per_round) == ("child", 9, 3)
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="loops back"):
        load(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(ConfigError, match=r"missing\.toml: config file not found"):
        load(tmp_path / "c.toml")
