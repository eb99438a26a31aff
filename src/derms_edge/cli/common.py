"""What every command shares: exit codes, and reading the configuration file."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from derms_edge.config import Config, MqttTls, load_config
from derms_edge.config.secrets import exposed_secrets
from derms_edge.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2


@contextmanager
def quiet(levels: Mapping[str, int]) -> Iterator[None]:
    """These loggers at these levels for the length of a command that reports the outcome
    itself, then as they were: a command run in-process (a test, a notebook) leaves logging
    as it found it."""
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    before = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


def load(path: Path) -> Config | None:
    """The configuration in ``path``; None (every problem printed) when it is not valid, or
    when a secret file it names is readable by others."""
    try:
        config = load_config(path)
    except ConfigError as error:
        _print_problems(path, error.problems)
        return None
    problems = exposed_secrets(config)
    if problems:
        _print_problems(path, problems)
        return None
    return config


def _print_problems(path: Path, problems: list[str]) -> None:
    print(f"{path}: {len(problems)} problem(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def add_mqtt_port(parser: argparse.ArgumentParser) -> None:
    """The option of the commands that talk to the broker: another port than the file's."""
    parser.add_argument("--mqtt-port", type=int, help="override mqtt.port of the file")


def add_mqtt_identity(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that act as a role on the broker: its client certificate
    (under the ACL of `derms-edge acl`, the gateway's own identity may not send controls)."""
    parser.add_argument("--cert", type=Path, help="client certificate (PEM), e.g. a role's")
    parser.add_argument("--key", type=Path, help="the private key (PEM) of --cert")


def load_with_mqtt_port(args: argparse.Namespace) -> Config | None:
    """The configuration ``args.config``, with ``--mqtt-port`` (and ``--cert`` and ``--key``
    where the command has them) applied; None when invalid."""
    config = load(args.config)
    if config is None:
        return None
    mqtt = config.mqtt
    if args.mqtt_port is not None:
        mqtt = mqtt.model_copy(update={"port": args.mqtt_port})
    cert, key = getattr(args, "cert", None), getattr(args, "key", None)
    if (cert is None) != (key is None):
        _print_problems(args.config, ["--cert and --key go together"])
        return None
    if cert is not None:
        tls = (mqtt.tls or MqttTls()).model_copy(update={"cert_file": cert, "key_file": key})
        mqtt = mqtt.model_copy(update={"tls": tls})
    return config.model_copy(update={"mqtt": mqtt})
