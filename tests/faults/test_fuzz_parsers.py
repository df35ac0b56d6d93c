"""Hypothesis fuzzing of every file and value parser: any input gives a value or the project's
BadInput (one line, what is wrong), never another exception."""

from __future__ import annotations

import copy
import json
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backends.errors import BadInput
from backends.libvirt.backend import check_uri
from backends.sim.fleet import _Loader, demo_fleet_path, parse_fleet
from backends.sim.scale import parse_scale
from backends.units import parse_size_kib
from backends.uri import redact
from console import scenario
from console.config import load_config
from tests.faults.figures import FIGURES

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEMO = tomllib.loads(demo_fleet_path().read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["8G", "-1G", "0", "host", "vfio", "fra-hv01", "web-01",
                                                           "0000:18:01.0", "running", "primary", "1e400"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)


def one_line(exc: BadInput) -> None:
    FIGURES.fuzzed += 1
    assert "\n" not in exc.one_line() and exc.one_line().strip()


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


DEMO_PATHS = paths(DEMO)[1:]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)) or v is None:
        return json.dumps(v) if v is not None else '""'
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(DEMO_PATHS), values), min_size=1, max_size=3))
def test_fleet_files_with_any_entry_changed(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    doc = copy.deepcopy(DEMO)
    for path, value in changes:
        target = doc
        try:
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path
    try:
        _Loader("fleet.toml").fleet(doc)
        FIGURES.fuzzed += 1
    except BadInput as exc:
        one_line(exc)


@FUZZ
@given(st.text(max_size=300))
def test_fleet_text(text: str) -> None:
    try:
        parse_fleet(text, "fleet.toml")
        FIGURES.fuzzed += 1
    except BadInput as exc:
        one_line(exc)


STEP_KEYS = ["press", "view", "wait_job", "wait_text", "assert_text", "screenshot", "pause", "run", "name",
             "timeout", "bogus"]


@FUZZ
@given(title=st.one_of(st.none(), values), steps=st.lists(
    st.dictionaries(st.sampled_from(STEP_KEYS), values, max_size=3), max_size=4),
    junk=st.binary(max_size=20))
def test_scenario_files(title: Any, steps: list[dict[str, Any]], junk: bytes) -> None:
    text = "" if title is None else f"title = {toml_value(title)}\n"
    for step in steps:
        text += "[[step]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in step.items())
    with tempfile.TemporaryDirectory() as tmp:
        for data in (text.encode(), text.encode() + junk):
            path = Path(tmp) / "s.toml"
            path.write_bytes(data)
            try:
                scenario.load(path)
                FIGURES.fuzzed += 1
            except BadInput as exc:
                one_line(exc)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["hosts", "read_only", "keys", "colour"]), values, max_size=3),
       junk=st.binary(max_size=20))
def test_config_and_keymap_files(doc: dict[str, Any], junk: bytes) -> None:
    text = "".join(f"{k} = {toml_value(v)}\n" for k, v in doc.items())
    with tempfile.TemporaryDirectory() as tmp:
        for data in (text.encode(), junk + text.encode()):
            path = Path(tmp) / "config.toml"
            path.write_bytes(data)
            try:
                config = load_config(path)
                assert all(isinstance(v, str) for v in config.keys.values())
                FIGURES.fuzzed += 1
            except BadInput as exc:
                one_line(exc)


@FUZZ
@example("9" * 400 + "T")  # once a crash: float overflow to inf
@example(2**80)
@given(st.one_of(st.text(max_size=40), st.integers(),
                 st.from_regex(r"\s*\d{0,400}(\.\d*)?\s*[KMGTkmgt]?[iI]?[bB]?\s*")))
def test_sizes(text: str | int) -> None:
    try:
        kib = parse_size_kib(text)
        assert isinstance(kib, int) and kib >= 0
        FIGURES.fuzzed += 1
    except BadInput as exc:
        one_line(exc)


@FUZZ
@given(st.one_of(st.text(max_size=40), st.from_regex(r"[a-z+]{1,10}:(//)?[^ ]{0,20}")))
def test_uris_and_scales(text: str) -> None:
    for parse in (check_uri, parse_scale):
        try:
            parse(text)
            FIGURES.fuzzed += 1
        except BadInput as exc:
            one_line(exc)


@FUZZ
@given(user=st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True),
       secret=st.from_regex(r"[A-Za-z0-9!$%^*()_+=~@-]{4,16}", fullmatch=True),
       scheme=st.sampled_from(["qemu+ssh", "qemu+tcp", "qemu+tls", "xen+ssh"]),
       words=st.text(alphabet=st.characters(whitelist_categories=("L", "Zs")), max_size=20))
def test_no_password_survives_redaction(user: str, secret: str, scheme: str, words: str) -> None:
    uri = f"{scheme}://{user}:{secret}@host.example/system"
    for text in (uri, f"{words} '{uri}': {words}", f"qemu+ssh://host/system?password={secret}&x=1 {words}"):
        shown = redact(text)
        FIGURES.fuzzed += 1
        assert f":{secret}@" not in shown and f"={secret}" not in shown
