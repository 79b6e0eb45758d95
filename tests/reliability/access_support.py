"""Helpers of the reliability suite's fuzzing and access-control modules.

* An in-memory schema registry client (the codec fuzz needs no registry server).
* Hypothesis strategies derived from ``avro/*.avsc``: valid records of every event family,
  and hostile JSON values.
* One valid JSON example per event type (the input format of ``POST /api/events``).
* Tokens of every kind (valid, forged, expired, wrong audience, ``alg=none``, missing claims).
* The live side: a worker (environment from ``support.workers``), HTTP clients, and a scan
  of logs for secrets (websocket clients: ``support.ws``).

Nothing here does I/O on import.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import jwt
from hypothesis import strategies as st

from app.core.models import EVENT_CLASSES, TOPIC_EVENTS, EventBase, MetricsSummary, ResourceRequest
from app.core.schemas import topic_schema
from support.event_examples import EVENT_ID, EXAMPLES, NOW, MemoryRegistryClient  # noqa: F401 - re-exported
from support.polling import wait_until
from support.ws import Client

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


# -- valid records of every family, from the Avro schemas ----------------------------------------
RECORD_CLASSES: dict[str, type] = {
    **{name: cls for name, cls in EVENT_CLASSES.items()},
    "ResourceRequest": ResourceRequest,
    "MetricsSummary": MetricsSummary,
}

_TIMESTAMPS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc),
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
#: Avro strings are UTF-8: any text without lone surrogates.
_AVRO_TEXT = st.text(max_size=40)
_DOUBLES = st.floats(allow_nan=False, allow_infinity=False)


def _named_types(node: Any, found: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, list):
        for item in node:
            _named_types(item, found)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            found[node["name"]] = node
        for fld in node.get("fields", ()):
            _named_types(fld["type"], found)
    return found


def _avro_strategy(node: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    if isinstance(node, list):  # a union: ["null", X]
        return st.one_of(*[_avro_strategy(branch, named) for branch in node])
    if isinstance(node, str):
        if node in named:
            return _avro_strategy(named[node], named)
        node = {"type": node}
    kind, logical = node["type"], node.get("logicalType")
    if kind == "null":
        return st.none()
    if kind == "string":
        return st.uuids().map(str) if logical == "uuid" else _AVRO_TEXT
    if kind == "int":
        return st.integers(INT_MIN, INT_MAX)
    if kind == "long":
        return _TIMESTAMPS if logical == "timestamp-millis" else st.integers(-(2**63), 2**63 - 1)
    if kind == "double":
        return _DOUBLES
    if kind == "boolean":
        return st.booleans()
    if kind == "enum":
        return st.sampled_from(node["symbols"])
    if kind == "map":
        return st.dictionaries(_AVRO_TEXT, _avro_strategy(node["values"], named), max_size=4)
    if kind == "record":
        cls = RECORD_CLASSES[node["name"]]
        fields = {f["name"]: _avro_strategy(f["type"], named) for f in node["fields"]}
        if issubclass(cls, EventBase):
            fields["event_type"] = st.just(cls.__name__)
        return st.fixed_dictionaries(fields).map(lambda values, c=cls: c(**values))
    if isinstance(kind, (dict, list)):
        return _avro_strategy(kind, named)
    raise TypeError(f"no strategy for Avro type {node!r}")


def valid_records(topic: str, event_type: str) -> st.SearchStrategy[EventBase]:
    """Events of ``event_type`` (of ``topic``) valid for the topic's Avro union (any values
    the schema allows, not only what the ingest validation accepts)."""
    schema = topic_schema(topic)
    named = _named_types(schema, {})
    return _avro_strategy(named[event_type], named)


def event_types() -> list[tuple[str, str]]:
    """(topic, event type) of every event family."""
    return [(topic, cls.__name__) for topic, classes in TOPIC_EVENTS.items() for cls in classes]


# -- JSON input ----------------------------------------------------------------------------------
#: Envelope fields every event may carry (filled in by the server when absent).
ENVELOPE = {"event_id": EVENT_ID, "timestamp": "2025-05-31T10:00:00.000Z", "correlation_id": "corr-1",
            "schema_version": 1}


def example(event_type: str, *, envelope: bool = True) -> dict[str, Any]:
    """A valid JSON event of ``event_type`` (with explicit envelope fields if asked)."""
    data = copy.deepcopy(EXAMPLES[event_type])
    if envelope:
        data = {**ENVELOPE, **data}
    return data


def paths_of(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every field of ``data``, nested objects' fields included."""
    found = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        found.append(path)
        if isinstance(value, dict):
            found.extend(paths_of(value, path))
    return found


def get_path(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        node = node[part]
    return node


def parent_of(data: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """(the object holding ``path``'s last part, that part)."""
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    return node, last


#: Text of every kind: plain, any Unicode (lone surrogates too: JSON ``\ud800`` escapes decode
#: to them), control characters, and very long.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "So", "Lo"]), max_size=10),
    st.sampled_from(["", " ", "\t\n", "\x00", "\u202e", "💥" * 3, "null", "NaN", "1e999", "%s%n", "../../etc",
                     "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000]),  # JSON nested too deep
    st.integers(10_000, 300_000).map(lambda n: "x" * n),
)
HOSTILE_NUMBERS = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.sampled_from([INT_MIN - 1, INT_MAX + 1, -1, 0, 10**400]),
    st.floats(), st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324]),
)
#: JSON values of every type (what ``json.loads`` can return, NaN and Infinity included).
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), HOSTILE_NUMBERS, HOSTILE_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
BAD_UUIDS = st.one_of(
    st.sampled_from(["", "not-a-uuid", "00000000-0000-0000-0000-000000000000", "5f1c2b0e8c4a4b559d7f2a4f8f3b6a11",
                     "{5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a11}", "5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a1",
                     "5F1C2B0E-8C4A-4B55-9D7F-2A4F8F3B6A11", "5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a11\n"]),
    st.uuids().map(lambda u: str(u)[:-1] + "g"), st.uuids().map(lambda u: " " + str(u)), HOSTILE_TEXT,
)
BAD_TIMESTAMPS = st.one_of(
    st.sampled_from(["", "yesterday", "2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z", "2024-05-01",
                     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2999-01-01T00:00:00Z",
                     "1999-12-31T23:59:59Z", "2024-05-01T25:00:00Z", "2024-05-01T12:00:00+99:00",
                     "2024-05-01T12:00:00.1234567891Z", "２０２４-05-01T12:00:00Z"]),
    st.integers(), st.floats(), st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23),
                                                             max_value=timedelta(hours=23)))).map(lambda d: d.isoformat()),
)


#: Nested objects that are records (fixed fields), by path; other objects are maps.
RECORD_PATHS = {"resource_request": ResourceRequest, "metrics_summary": MetricsSummary}
EVENT_TYPES = sorted(EXAMPLES)


def _known_fields(cls: type) -> set[str]:
    return set(cls._options.fields)  # type: ignore[attr-defined]


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[dict, str, str]:
    """(event JSON, dotted path mutated, kind of mutation)."""
    event_type = draw(st.sampled_from(EVENT_TYPES), label="event_type")
    data = example(event_type, envelope=draw(st.booleans(), label="envelope"))
    paths = paths_of(data)
    kind = draw(st.sampled_from(["drop", "extra", "replace", "replace", "number", "text", "uuid", "timestamp",
                                 "event_type"]), label="kind")
    if kind == "drop":
        path = draw(st.sampled_from(paths), label="path")
        holder, last = parent_of(data, path)
        del holder[last]
    elif kind == "extra":
        where = draw(st.sampled_from([""] + [p for p in RECORD_PATHS if p in data]), label="where")
        known = _known_fields(RECORD_PATHS[where] if where else EVENT_CLASSES[event_type])
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in known), label="name")
        holder = get_path(data, where) if where else data
        holder[name] = draw(JSON_VALUES, label="value")
        path = f"{where}.{name}" if where else name
    else:
        if kind == "uuid":
            path, value = "event_id", draw(BAD_UUIDS, label="value")
        elif kind == "timestamp":
            path, value = "timestamp", draw(BAD_TIMESTAMPS, label="value")
        elif kind == "event_type":
            path = "event_type"
            value = draw(st.one_of(JSON_VALUES, st.sampled_from(EVENT_TYPES)), label="value")
        else:
            full = example(event_type)  # same fields, envelope included
            candidates = {
                "replace": paths_of(full),
                # hostile values of the field's own JSON type: these are often accepted
                "number": [p for p in paths_of(full) if type(get_path(full, p)) in (int, float)],
                "text": [p for p in paths_of(full) if isinstance(get_path(full, p), str) and p != "event_type"],
            }[kind]
            path = draw(st.sampled_from(candidates), label="path")
            values = {"replace": JSON_VALUES, "number": HOSTILE_NUMBERS, "text": HOSTILE_TEXT}[kind]
            value = draw(values, label="value")
        holder, last = parent_of(data, path) if "." in path else (data, path)
        holder[last] = value
    return data, path, kind


# -- tokens --------------------------------------------------------------------------------------
def claims(*, sub: str, audience: str, role: str | None = None, ttl_s: int = 3600) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "aud": audience, "exp": now + ttl_s, "iat": now}
    if role:
        body["role"] = role
    return body


def hs256(body: dict[str, Any], key: str) -> str:
    return jwt.encode(body, key, algorithm="HS256")


def alg_none(body: dict[str, Any]) -> str:
    """An unsigned token (``alg: none``)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


def bad_tokens(*, secret: str, audience: str, sub: str, role: str | None = None) -> dict[str, str]:
    """Every kind of token a server must refuse, by name (valid ones would be for ``sub``)."""
    good = claims(sub=sub, audience=audience, role=role)
    without = lambda name: {k: v for k, v in good.items() if k != name}  # noqa: E731
    return {
        "forged (wrong key)": hs256(good, "not-the-secret-" + uuid.uuid4().hex),
        "expired": hs256({**good, "exp": int(time.time()) - 120}, secret),
        "wrong audience": hs256({**good, "aud": "someone-else"}, secret),
        "alg=none": alg_none(good),
        "no exp": hs256(without("exp"), secret),
        "no aud": hs256(without("aud"), secret),
        "no sub": hs256(without("sub"), secret),
        "garbage": "not.a.jwt",
        "signature stripped": hs256(good, secret).rsplit(".", 1)[0] + ".",
        "HS512 with the secret": jwt.encode(good, secret, algorithm="HS512"),
    }


# -- the live side -------------------------------------------------------------------------------
class LogCollector(logging.Handler):
    """Every log record of this (test) process while installed, formatted with its arguments."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a broken record must not break the test
            self.lines.append(repr(record.__dict__))


def leaked_secrets(*, texts: Iterable[tuple[str, str]], secrets: dict[str, str]) -> list[str]:
    """``"<secret name> in <text name>"`` for every secret found in any text."""
    found = []
    for where, text in texts:
        for name, secret in secrets.items():
            if secret and secret in text:
                found.append(f"{name} in {where}")
    return found


class LiveWorker:
    """One real worker for a whole test module, with what is needed to talk to it and to check
    its logs afterwards: every token minted through it is remembered."""

    def __init__(self, *, uid: str, env: dict[str, str], log_path: Path) -> None:
        from app.core.settings import Settings
        from app.ops.worker_process import WorkerProcess

        self.uid = uid
        self.env = env
        self.settings = Settings.from_env(environ=env)
        self.log_path = log_path
        self.process = WorkerProcess(env=env, log_path=log_path)
        self.base_url = self.process.base_url
        self.ws_url = self.base_url.replace("http://", "ws://") + "/ws"
        self.tokens: list[str] = []
        self.logs = LogCollector()

    def topic(self, name: str) -> str:
        return self.settings.topic_prefix + name

    def token(self, sub: str, *, role: str | None = None) -> str:
        """A valid token of ``sub`` (an operator with ``role="operator"``)."""
        value = hs256(claims(sub=sub, audience=self.settings.jwt_audience, role=role), self.settings.jwt_secret)
        self.tokens.append(value)
        return value

    def operator(self) -> str:
        return self.token("ops", role=self.settings.jwt_operator_role)

    def publisher(self) -> str:
        """A token that may ``POST /api/events`` (the platform API's)."""
        return self.token("platform-api", role=self.settings.jwt_publisher_role)

    def bad_tokens(self, *, sub: str, role: str | None = None) -> dict[str, str]:
        made = bad_tokens(secret=self.settings.jwt_secret, audience=self.settings.jwt_audience, sub=sub, role=role)
        self.tokens.extend(made.values())
        return made

    def secrets(self) -> dict[str, str]:
        """Name → value of what must never be logged."""
        from urllib.parse import urlsplit

        found = {"COSMIC_JWT_SECRET": self.settings.jwt_secret}
        url = urlsplit(self.settings.rabbitmq_url)
        if url.password:
            # "guest" is also the user name of the local stack: look for it where a password sits
            found["RabbitMQ password in a URL"] = f":{url.password}@"
            found["RabbitMQ URL with password"] = self.settings.rabbitmq_url
        for n, value in enumerate(self.tokens):
            found[f"token #{n}"] = value
            # a token cut at its signature would still be a credential for alg=none servers
            found[f"token #{n} payload"] = ".".join(value.split(".")[:2]) + "."
        return found

    def leaks(self, *, extra_texts: Iterable[tuple[str, str]] = ()) -> list[str]:
        texts = [("worker log", self.log_path.read_text(errors="replace") if self.log_path.exists() else ""),
                 ("test process log records", "\n".join(self.logs.lines)), *extra_texts]
        return leaked_secrets(texts=texts, secrets=self.secrets())


# -- HTTP and websocket clients -------------------------------------------------------------------
def http(base_url: str, method: str, path: str, *, token: str | None = None, headers: dict[str, str] | None = None,
         body: bytes | None = None, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """One request (blocking): (status, headers, body); never raises for an HTTP status."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{base_url}{path}", method=method, data=body)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def http_settled(base_url: str, method: str, path: str, *, deadline_s: float = 90.0,
                 **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    """Like :func:`http`, but a 503 (worker recovering or rebalancing) is retried until the deadline."""
    return wait_until(lambda: http(base_url, method, path, **kwargs), timeout=deadline_s, what=f"{method} {path}",
                      accept=lambda answer: answer[0] != 503, fail=False)


class WsClient(Client):
    """``support.ws.Client`` with this suite's 60 s waits."""

    timeout = 60.0


class LoopThread:
    """An event loop in a thread of its own: lets a synchronous (hypothesis) test drive async
    clients without touching the test session's loop. ``run(coro)`` waits for the result."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="reliability-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Any, *, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def run_async(coro: Any, *, timeout: float = 120.0) -> Any:
    """Run one coroutine to completion on a fresh loop in another thread (from a sync test)."""
    runner = LoopThread()
    try:
        return runner.run(coro, timeout=timeout)
    finally:
        runner.close()
