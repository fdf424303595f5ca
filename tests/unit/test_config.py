"""Tests for paota.core.config: defaults, environment parsing, validation, redaction."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import pytest

from paota.core.config import AMQPConfig, Config, MongoConfig, redact_url
from paota.core.errors import ConfigError

AMQP_URL = "amqp://guest:guest@rabbit:5672/vhost"


def _env_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults ------------------------------------------------------------------------------------


def test_defaults() -> None:
    config = Config()
    assert config == Config.from_env({})
    assert (config.broker, config.store) == ("memory", "")
    assert config.task_queue_name == "paota_tasks"
    assert config.store_queue_name == ""
    assert config.max_task_execution_duration_s == 0.0
    assert config.retry_backoff_cap_s == 10.0
    assert config.unknown_task_max_returns == 5
    assert config.shutdown_grace_s == 30.0

    amqp = config.amqp
    assert amqp == AMQPConfig()
    assert amqp.url == ""
    assert amqp.exchange == "paota_task_exchange"
    assert amqp.exchange_type == "direct"
    assert amqp.queue_declare_args == {}
    assert amqp.queue_binding_args == {}
    assert amqp.binding_key == "paota_task_binding_key"
    assert amqp.prefetch_count == 100
    assert amqp.auto_delete is False
    assert amqp.delayed_queue == "paota_task_delayed_queue"
    assert amqp.failed_queue == "paota_task_failed_queue"
    assert amqp.timeout_queue == "paota_task_timeout_queue"
    assert amqp.connection_pool_size == 5
    assert amqp.heartbeat_interval_s == 10
    assert amqp.connection_timeout_s == 10.0
    assert amqp.publish_timeout_s == 30.0

    mongo = config.mongo
    assert mongo == MongoConfig()
    assert mongo.uri == "mongodb://127.0.0.1:27017"
    assert mongo.database == "paota"
    assert mongo.collection == "paota_tasks"
    assert mongo.max_pool_size == 100
    assert mongo.result_ttl_s == 0
    assert mongo.timeout_s == 5.0


@pytest.mark.parametrize(
    "name", ["PAOTA_QUEUE_NAME", "PAOTA_BROKER", "PAOTA_AMQP_PREFETCH_COUNT", "PAOTA_MONGO_URI"]
)
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_variable_is_an_error_naming_it(name: str, value: str) -> None:
    # an empty PAOTA_QUEUE_NAME= once bound the shared default queue to the user's exchange
    message = _env_error({name: value})
    assert message.startswith(f"{name} is set but empty: unset it to use the default")
    assert "expected" in message


def test_an_empty_variable_is_the_empty_value_where_the_field_takes_one() -> None:
    env = {"PAOTA_STORE": "", "PAOTA_AMQP_DELAY_LADDER": " ", "PAOTA_STORE_QUEUE_NAME": ""}
    config = Config.from_env(env)
    assert (config.store, config.amqp.delay_ladder, config.store_queue_name) == ("", "", "")


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAOTA_QUEUE_NAME", "from_os_environ")  # restored by monkeypatch
    assert Config.from_env().task_queue_name == "from_os_environ"


def test_config_reads_the_environment_and_code_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    # the README's producer, Client(Config()), sent into a memory broker with PAOTA_BROKER=amqp
    monkeypatch.setenv("PAOTA_BROKER", "amqp")
    monkeypatch.setenv("PAOTA_AMQP_URL", "amqp://u:p@rabbit:5672/")
    monkeypatch.setenv("PAOTA_QUEUE_NAME", "from_env")
    monkeypatch.setenv("PAOTA_AMQP_BINDING_KEY", "from_env")
    monkeypatch.setenv("PAOTA_AMQP_PREFETCH_COUNT", "7")
    config = Config()
    assert (config.broker, config.amqp.url, config.task_queue_name) == (
        "amqp",
        "amqp://u:p@rabbit:5672/",
        "from_env",
    )
    assert config.amqp.prefetch_count == 7
    assert Config(task_queue_name="in_code", broker="memory").task_queue_name == "in_code"
    assert Config(amqp=AMQPConfig(url="amqp://other/")).amqp.prefetch_count == 7
    assert Config.from_env({}) == Config.from_env({"PAOTA_X_UNKNOWN": "1"})
    assert Config.from_env({}).broker == "memory"


def test_the_environment_names_a_bad_value_even_when_read_by_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAOTA_AMQP_PREFETCH_COUNT", "many")
    with pytest.raises(ConfigError, match=r"^PAOTA_AMQP_PREFETCH_COUNT='many' is not valid"):
        Config()
    # a value given in code is used: the bad variable is not read
    Config(amqp=AMQPConfig(prefetch_count=3))


# --- every variable ------------------------------------------------------------------------------


def test_every_variable_is_read() -> None:
    env = {
        "PAOTA_BROKER": "amqp",
        "PAOTA_STORE": "mongodb",
        "PAOTA_QUEUE_NAME": "q",
        "PAOTA_STORE_QUEUE_NAME": "sq",
        "PAOTA_MAX_TASK_EXEC_DURATION": "1m30s",
        "PAOTA_RETRY_BACKOFF_CAP": "2.5",
        "PAOTA_UNKNOWN_TASK_MAX_RETURNS": "0",
        "PAOTA_SHUTDOWN_GRACE": "45",
        "PAOTA_AMQP_URL": AMQP_URL,
        "PAOTA_AMQP_EXCHANGE": "ex",
        "PAOTA_AMQP_EXCHANGE_TYPE": "topic",
        "PAOTA_AMQP_QUEUE_DECLARE_ARGS": '{"x-max-priority": 10, "x-queue-type": "quorum"}',
        "PAOTA_AMQP_QUEUE_BINDING_ARGS": '{"x-match": "all"}',
        "PAOTA_AMQP_BINDING_KEY": "bk",
        "PAOTA_AMQP_PREFETCH_COUNT": "7",
        "PAOTA_AMQP_AUTO_DELETE": "yes",
        "PAOTA_AMQP_DELAYED_QUEUE": "dq",
        "PAOTA_AMQP_FAILED_QUEUE": "fq",
        "PAOTA_AMQP_TIMEOUT_QUEUE": "tq",
        "PAOTA_AMQP_CONNECTION_POOL_SIZE": "3",
        "PAOTA_AMQP_HEARTBEAT_INTERVAL": "0",
        "PAOTA_AMQP_CONNECTION_TIMEOUT": "500ms",
        "PAOTA_AMQP_PUBLISH_TIMEOUT": "1m",
        "PAOTA_MONGO_URI": "mongodb+srv://u:p@cluster.example.net/?retryWrites=true",
        "PAOTA_MONGO_DB": "db",
        "PAOTA_MONGO_COLLECTION": "coll",
        "PAOTA_MONGO_MAX_POOL_SIZE": "20",
        "PAOTA_MONGO_RESULT_TTL": "3600",
        "PAOTA_MONGO_TIMEOUT": "2s",
    }
    amqp = AMQPConfig(
        url=AMQP_URL,
        exchange="ex",
        exchange_type="topic",
        queue_declare_args={"x-max-priority": 10, "x-queue-type": "quorum"},
        queue_binding_args={"x-match": "all"},
        binding_key="bk",
        prefetch_count=7,
        auto_delete=True,
        delayed_queue="dq",
        failed_queue="fq",
        timeout_queue="tq",
        connection_pool_size=3,
        heartbeat_interval_s=0,
        connection_timeout_s=0.5,
        publish_timeout_s=60.0,
    )
    mongo = MongoConfig(
        uri="mongodb+srv://u:p@cluster.example.net/?retryWrites=true",
        database="db",
        collection="coll",
        max_pool_size=20,
        result_ttl_s=3600,
        timeout_s=2.0,
    )
    expected = Config(
        broker="amqp",
        store="mongodb",
        task_queue_name="q",
        store_queue_name="sq",
        max_task_execution_duration_s=90.0,
        retry_backoff_cap_s=2.5,
        unknown_task_max_returns=0,
        shutdown_grace_s=45.0,
        amqp=amqp,
        mongo=mongo,
    )
    assert Config.from_env(env) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("2.5", 2.5),
        ("0", 0.0),
        (".5", 0.5),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("300us", 0.0003),
        ("300\u00b5s", 0.0003),
        ("300\u03bcs", 0.0003),
        ("1500000ns", 0.0015),
        ("1h2m3.5s", 3723.5),
        ("+10s", 10.0),
        (" 5s ", 5.0),
    ],
)
def test_go_duration_and_plain_seconds(text: str, seconds: float) -> None:
    config = Config.from_env({"PAOTA_MAX_TASK_EXEC_DURATION": text, "PAOTA_SHUTDOWN_GRACE": text})
    assert config.max_task_execution_duration_s == pytest.approx(seconds)
    assert config.shutdown_grace_s == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["abc", "5x", "1m30", "s", "1 m", "-1s", "-2", "nan", "inf", "."])
def test_bad_duration_is_rejected(text: str) -> None:
    message = _env_error({"PAOTA_SHUTDOWN_GRACE": text})
    assert message.startswith(f"PAOTA_SHUTDOWN_GRACE={text!r} is not valid: ")
    assert ">= 0" in message
    assert "Go duration" in message


@pytest.mark.parametrize(
    "variable",
    [
        "PAOTA_RETRY_BACKOFF_CAP",
        "PAOTA_AMQP_CONNECTION_TIMEOUT",
        "PAOTA_AMQP_PUBLISH_TIMEOUT",
        "PAOTA_MONGO_TIMEOUT",
    ],
)
def test_zero_duration_rejected_where_positive_required(variable: str) -> None:
    assert _env_error({variable: "0s"}).startswith(f"{variable}='0s' is not valid: ")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_bool_parsing(text: str, value: bool) -> None:
    assert Config.from_env({"PAOTA_AMQP_AUTO_DELETE": text}).amqp.auto_delete is value


def test_bad_bool_is_rejected() -> None:
    message = _env_error({"PAOTA_AMQP_AUTO_DELETE": "maybe"})
    assert message.startswith("PAOTA_AMQP_AUTO_DELETE='maybe' is not valid: ")
    assert "true/false" in message


# --- JSON args -----------------------------------------------------------------------------------


def test_json_args_object() -> None:
    env = {"PAOTA_AMQP_QUEUE_DECLARE_ARGS": '{"x-max-priority": 10, "x-queue-type": "quorum"}'}
    args = Config.from_env(env).amqp.queue_declare_args
    assert isinstance(args, MappingProxyType)
    assert dict(args) == {"x-max-priority": 10, "x-queue-type": "quorum"}


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("[1, 2]", "got a JSON array"),
        ('"quorum"', "got a JSON string"),
        ("10", "got a JSON number"),
        ("true", "got a JSON boolean"),
        ("null", "got a JSON null"),
        ("{bad", "malformed JSON (Expecting property name"),
        ("{'x': 1}", "malformed JSON"),
    ],
)
@pytest.mark.parametrize(
    "variable", ["PAOTA_AMQP_QUEUE_DECLARE_ARGS", "PAOTA_AMQP_QUEUE_BINDING_ARGS"]
)
def test_json_args_not_an_object_is_rejected(variable: str, text: str, detail: str) -> None:
    message = _env_error({variable: text})
    assert message.startswith(f"{variable}={text!r} is not valid: {detail}")
    assert "expected a JSON object" in message


# --- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "-1", "0", "1.5", "1_000", "1e3"])
def test_bad_prefetch_count_names_the_variable(text: str) -> None:
    message = _env_error({"PAOTA_AMQP_PREFETCH_COUNT": text})
    assert message == f"PAOTA_AMQP_PREFETCH_COUNT={text!r} is not valid: expected an integer >= 1"


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("PAOTA_UNKNOWN_TASK_MAX_RETURNS", "-1"),
        ("PAOTA_AMQP_CONNECTION_POOL_SIZE", "0"),
        ("PAOTA_AMQP_HEARTBEAT_INTERVAL", "10s"),
        ("PAOTA_MONGO_MAX_POOL_SIZE", "0"),
        ("PAOTA_MONGO_RESULT_TTL", "-5"),
    ],
)
def test_bad_integers_are_rejected(variable: str, bad: str) -> None:
    assert _env_error({variable: bad}).startswith(f"{variable}={bad!r} is not valid: expected an")


# --- choices, URLs, cross-field ------------------------------------------------------------------


def test_unknown_broker() -> None:
    message = _env_error({"PAOTA_BROKER": "redis"})
    assert message == "PAOTA_BROKER='redis' is not valid: expected one of 'memory', 'amqp'"


def test_unknown_store() -> None:
    message = _env_error({"PAOTA_STORE": "redis"})
    assert message.startswith("PAOTA_STORE='redis' is not valid: expected one of ")
    assert "'mongodb'" in message


@pytest.mark.parametrize(("text", "store"), [("none", ""), ("None", ""), ("memory", "memory")])
def test_store_normalised(text: str, store: str) -> None:
    assert Config.from_env({"PAOTA_STORE": text}).store == store
    assert Config(store=text).store == store


def test_unknown_exchange_type() -> None:
    message = _env_error({"PAOTA_AMQP_EXCHANGE_TYPE": "x-delayed"})
    assert message.startswith("PAOTA_AMQP_EXCHANGE_TYPE='x-delayed' is not valid: expected one of")
    assert "'headers'" in message


def test_amqp_broker_without_url_from_env() -> None:
    message = _env_error({"PAOTA_BROKER": "amqp"})
    assert message.startswith("amqp.url='' is not valid: required when broker is 'amqp'")
    assert "PAOTA_AMQP_URL" in message


def test_amqp_broker_without_url_in_code() -> None:
    with pytest.raises(ConfigError, match=r"^amqp\.url='' is not valid: required when broker"):
        Config(broker="amqp")


def test_amqp_broker_with_url() -> None:
    config = Config.from_env({"PAOTA_BROKER": "amqp", "PAOTA_AMQP_URL": "amqps://h"})
    assert (config.broker, config.amqp.url) == ("amqp", "amqps://h")


def test_bad_amqp_scheme_is_rejected_and_redacted() -> None:
    message = _env_error({"PAOTA_AMQP_URL": "http://user:s3cret@host/"})
    assert message == (
        "PAOTA_AMQP_URL='http://user:***@host/' is not valid: "
        "expected a URL starting with amqp:// or amqps://"
    )
    assert "s3cret" not in message
    with pytest.raises(ConfigError, match=r"^amqp\.url='rabbit:5672' is not valid"):
        AMQPConfig(url="rabbit:5672")


def test_bad_mongo_scheme_is_rejected() -> None:
    message = _env_error({"PAOTA_MONGO_URI": "postgres://db"})
    assert message.startswith("PAOTA_MONGO_URI='postgres://db' is not valid: ")
    assert "mongodb+srv://" in message
    with pytest.raises(ConfigError, match=r"^mongo\.uri='' is not valid"):
        MongoConfig(uri="")


# --- construction in code ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({"prefetch_count": 0}, "amqp.prefetch_count=0"),
        ({"prefetch_count": "5"}, "amqp.prefetch_count='5'"),
        ({"prefetch_count": True}, "amqp.prefetch_count=True"),
        ({"auto_delete": "yes"}, "amqp.auto_delete='yes'"),
        ({"connection_timeout_s": 0}, "amqp.connection_timeout_s=0"),
        ({"publish_timeout_s": float("nan")}, "amqp.publish_timeout_s=nan"),
        ({"queue_declare_args": [("a", 1)]}, "amqp.queue_declare_args=[('a', 1)]"),
        ({"queue_binding_args": {1: 2}}, "amqp.queue_binding_args={1: 2}"),
        ({"delayed_queue": ""}, "amqp.delayed_queue=''"),
    ],
)
def test_amqp_config_validated_in_code(kwargs: dict[str, Any], label: str) -> None:
    with pytest.raises(ConfigError) as info:
        AMQPConfig(**kwargs)
    assert str(info.value).startswith(f"{label} is not valid: expected ")


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({"broker": "redis"}, "broker='redis'"),
        ({"shutdown_grace_s": -1}, "shutdown_grace_s=-1"),
        ({"retry_backoff_cap_s": 0.0}, "retry_backoff_cap_s=0.0"),
        ({"unknown_task_max_returns": -1}, "unknown_task_max_returns=-1"),
        ({"task_queue_name": ""}, "task_queue_name=''"),
        ({"amqp": {}}, "amqp={}"),
    ],
)
def test_config_validated_in_code(kwargs: dict[str, Any], label: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**kwargs)
    assert str(info.value).startswith(f"{label} is not valid: expected ")


def test_mongo_config_validated_in_code() -> None:
    with pytest.raises(ConfigError, match=r"^mongo\.result_ttl_s=-1 is not valid"):
        MongoConfig(result_ttl_s=-1)


def test_code_construction_normalises() -> None:
    config = Config(shutdown_grace_s=5, broker="AMQP", amqp=AMQPConfig(url=AMQP_URL))
    assert config.shutdown_grace_s == 5.0
    assert isinstance(config.shutdown_grace_s, float)
    assert config.broker == "amqp"


def test_replace_is_validated() -> None:
    config = Config()
    assert dataclasses.replace(config, store="memory").store == "memory"
    with pytest.raises(ConfigError):
        dataclasses.replace(config, broker="amqp")


# --- immutability --------------------------------------------------------------------------------


def test_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.broker = "amqp"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.amqp.prefetch_count = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mongo.uri = "mongodb://other"  # type: ignore[misc]


def test_json_args_mapping_is_read_only_and_copied() -> None:
    args = {"x-max-priority": 10}
    amqp = AMQPConfig(queue_declare_args=args)
    assert isinstance(amqp.queue_declare_args, MappingProxyType)
    args["x-max-priority"] = 99  # the caller's dict is copied
    assert amqp.queue_declare_args == {"x-max-priority": 10}
    with pytest.raises(TypeError):
        amqp.queue_declare_args["x-max-priority"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        AMQPConfig().queue_binding_args["k"] = "v"  # type: ignore[index]


def test_config_is_hashable_and_comparable() -> None:
    a = AMQPConfig(url=AMQP_URL, queue_declare_args={"x-max-priority": 10})
    b = AMQPConfig(url=AMQP_URL, queue_declare_args={"x-max-priority": 10})
    assert a == b
    assert hash(Config(amqp=a)) == hash(Config(amqp=b))
    assert a != AMQPConfig(url=AMQP_URL, queue_declare_args={"x-max-priority": 5})


# --- redaction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("amqp://guest:guest@rabbit:5672/vhost", "amqp://guest:***@rabbit:5672/vhost"),
        ("amqps://u:p%40ss@host/", "amqps://u:***@host/"),
        ("amqp://rabbit:5672/", "amqp://rabbit:5672/"),
        ("amqp://user@rabbit/", "amqp://user@rabbit/"),
        ("amqp://user:@rabbit/", "amqp://user:***@rabbit/"),
        ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
        (
            "mongodb+srv://admin:hunter2@cluster0.example.net/db?retryWrites=true&w=majority",
            "mongodb+srv://admin:***@cluster0.example.net/db?retryWrites=true&w=majority",
        ),
        (
            "mongodb://u:pw@h1:27017,h2:27017,h3:27017/db?replicaSet=rs0",
            "mongodb://u:***@h1:27017,h2:27017,h3:27017/db?replicaSet=rs0",
        ),
        ("mongodb://u:pw@h1,h2", "mongodb://u:***@h1,h2"),
        ("amqp://host/vhost?x=a:b@c", "amqp://host/vhost?x=a:b@c"),
        ("", ""),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_repr_redacts_passwords() -> None:
    config = Config(
        broker="amqp",
        amqp=AMQPConfig(url="amqp://u:amqp-secret@h/"),
        mongo=MongoConfig(uri="mongodb://u:mongo-secret@h1,h2/"),
    )
    text = repr(config)
    assert "amqp-secret" not in text
    assert "mongo-secret" not in text
    assert "amqp://u:***@h/" in text
    assert "mongodb://u:***@h1,h2/" in text
    assert text.startswith("Config(broker='amqp', store=''")


def test_a_renamed_queue_on_the_default_binding_is_refused_with_the_fix() -> None:
    # only PAOTA_QUEUE_NAME changed: a second queue bound with the same key got a copy of every
    # task (74 unconsumed copies; "done 16/10")
    env = {"PAOTA_BROKER": "amqp", "PAOTA_AMQP_URL": "amqp://h/", "PAOTA_QUEUE_NAME": "images"}
    message = _env_error(env)
    assert "every task sent to either would be copied into both" in message
    assert "PAOTA_AMQP_BINDING_KEY=images and PAOTA_AMQP_DELAYED_QUEUE=images_delayed" in message
    # the fix, or a queue of its own exchange, or another exchange type, is accepted
    fixed = {**env, "PAOTA_AMQP_BINDING_KEY": "images", "PAOTA_AMQP_DELAYED_QUEUE": "images_d"}
    assert Config.from_env(fixed).amqp.binding_key == "images"
    assert Config.from_env({**env, "PAOTA_AMQP_EXCHANGE": "images_x"}).task_queue_name == "images"
    assert Config.from_env({**env, "PAOTA_AMQP_EXCHANGE_TYPE": "topic"}).broker == "amqp"
    # Go's defaults stay where nothing is set; the memory broker binds nothing
    assert Config.from_env({k: v for k, v in env.items() if k != "PAOTA_QUEUE_NAME"})
    assert Config(task_queue_name="images").task_queue_name == "images"
