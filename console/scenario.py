"""Scenario files for `hvc play`: a TOML list of steps that drive the real console headless.

A scenario is a TOML file with an optional ``title`` and one ``[[step]]`` table per step, run
in order. Each step does exactly one thing, named by one of these keys:

    press = ["2", "j", "enter"]   keys, by Textual key name ("slash", "escape", "enter", "G" …)
    type = "web-01"               text, one key per character
    view = "vms"                  open a view: fleet, vms, devices, replication, jobs, services, or
                                  "host NAME" for one host's NUMA map
    run = "migrate web-01 --to dub-hv01"
                                  an operation, written exactly as the `hvc` verb and its options
                                  (migrate, handoff, rebalance, replicate, failover, start, …);
                                  it goes through the console like a key press would, and its
                                  confirmation is answered yes
    wait_job = true               wait until every job started so far has finished; fails when
                                  one did not succeed
    wait_text = "succeeded"       wait until the text is on screen
    assert_text = "dub-hv01"      the text (or each of a list of texts) is on screen now
    assert_no_text = "remote"     the text (or none of a list of texts) is on screen now
    screenshot = "vms"            write the screen as NAME.svg into the --screenshots directory
    pause = 1.5                   wait this many wall-clock seconds (a human-paced demo)

and may add ``name = "…"`` (shown in the output and in failures) and, on ``wait_job`` and
``wait_text``, ``timeout = SECONDS`` (default 30 and 10). Text matches a substring of one
screen line. A scenario is checked completely before anything runs: a mistake is one line
naming the file, the line, the step and the key.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.errors import BadInput
from backends.requests import Request

ACTIONS = ("press", "type", "view", "run", "wait_job", "wait_text", "assert_text", "assert_no_text",
           "screenshot", "pause")
VIEWS = ("fleet", "vms", "devices", "replication", "jobs", "services")
TIMEOUTS = {"wait_job": 30.0, "wait_text": 10.0}
SHIPPED = Path(__file__).with_name("scenarios")
_STEP_HEADER = re.compile(r"^\s*\[\[\s*step\s*\]\]")
_BACKEND_OPTIONS = ("connect", "demo", "fleet", "scale", "read_only")


@dataclass(frozen=True, slots=True)
class Step:
    index: int  # from 1
    action: str
    value: Any  # list[str] for press and the assertions, str, float, or True
    name: str = ""
    timeout: float | None = None
    request: Request | None = None  # for run: what the CLI verb would have asked the backend
    question: str | None = None  # for run: the confirmation the verb asks

    @property
    def label(self) -> str:
        """The step as written, short: ``press 2 j``, ``assert_text "a", "b"``, ``wait_job``."""
        if self.action == "press":
            what = "press " + " ".join(self.value)
        elif isinstance(self.value, list):
            what = f"{self.action} " + ", ".join(json.dumps(v, ensure_ascii=False) for v in self.value)
        elif self.action in ("type", "run", "wait_text"):
            what = f"{self.action} {json.dumps(self.value, ensure_ascii=False)}"
        elif self.action == "pause":
            what = f"pause {self.value:g}s"
        elif self.action == "screenshot":
            what = f"screenshot {self.value}.svg"
        else:
            what = "wait_job" if self.action == "wait_job" else f"{self.action} {self.value}"
        return f"{what} ({self.name})" if self.name else what


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    title: str
    steps: tuple[Step, ...]


def find(name: str) -> Path:
    """A scenario file by path, or a shipped scenario by name (``tour``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{path.stem}.toml"
    if path.name == name and shipped.is_file():
        return shipped
    raise BadInput(f"no scenario {name!r}: not a file, nor one of the shipped ones ({', '.join(shipped_names())})")


def shipped_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def load(path: Path) -> Scenario:
    """Read and check the whole scenario; ``BadInput`` names the line and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not a text file (byte {exc.start} is not UTF-8)",
                       hint="a scenario is a UTF-8 TOML file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at (?:line (\d+), column \d+|end of document)\)$", message)
        line = (where.group(1) or len(text.splitlines())) if where else "?"
        problem = message[:where.start()].strip() if where else message
        raise BadInput(f"{path}:{line}: not valid TOML: {problem}",
                       hint="the format is in the README, under Headless scenarios") from None
    lines = text.splitlines()
    for key in doc:
        if key not in ("title", "step"):
            raise BadInput(f"{path}:{_key_line(lines, 0, len(lines), key)}: unknown top-level key {key!r}",
                           hint="a scenario has a title and [[step]] tables")
    steps = doc.get("step")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise BadInput(f"{path}: no steps", hint="add [[step]] tables, e.g. [[step]] press = [\"2\"]")
    headers = [n for n, line in enumerate(lines, 1) if _STEP_HEADER.match(line)]
    parsed = tuple(_step(path, lines, headers, i, raw) for i, raw in enumerate(steps, 1))
    title = doc.get("title", path.stem)
    if not isinstance(title, str):
        raise BadInput(f"{path}:{_key_line(lines, 0, len(lines), 'title')}: title must be a string")
    return Scenario(path, title, parsed)


def _step(path: Path, lines: list[str], headers: list[int], index: int, raw: dict[str, Any]) -> Step:
    start = headers[index - 1] if index <= len(headers) else 0
    end = headers[index] - 1 if index < len(headers) else len(lines)
    name = raw.get("name", "")

    def fail(problem: str, key: str | None = None) -> BadInput:
        line = _key_line(lines, start, end, key) if key else (start or "?")
        who = f"step {index}" + (f" {name!r}" if isinstance(name, str) and name else "")
        return BadInput(f"{path}:{line}: {who}: {problem}")

    if not isinstance(name, str):
        raise fail("name must be a string", "name")
    for key in raw:
        if key not in (*ACTIONS, "name", "timeout"):
            raise fail(f"unknown key {key!r} (a step has one of: {', '.join(ACTIONS)}; and name, timeout)", key)
    actions = [k for k in raw if k in ACTIONS]
    if len(actions) != 1:
        raise fail(f"a step does exactly one thing; found {', '.join(actions) or 'nothing'}"
                   f" (one of: {', '.join(ACTIONS)})", actions[1] if len(actions) > 1 else None)
    action = actions[0]
    timeout = raw.get("timeout")
    if timeout is not None and action not in TIMEOUTS:
        raise fail("timeout applies only to wait_job and wait_text", "timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0):
        raise fail("timeout must be a positive number of seconds", "timeout")
    try:
        value, request, question = _value(action, raw[action])
    except ValueError as exc:
        raise fail(str(exc), action) from None
    return Step(index, action, value, name, float(timeout or TIMEOUTS.get(action, 0)) or None, request, question)


def _value(action: str, value: Any) -> tuple[Any, Request | None, str | None]:
    """The checked value of one step's action; ValueError says what is wrong with it."""
    if action in ("press", "assert_text", "assert_no_text"):
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise ValueError(f"{action} takes a non-empty string or a list of them")
        return items, None, None
    if action == "wait_job":
        if value is not True:
            raise ValueError("wait_job takes true")
        return True, None, None
    if action == "pause":
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError("pause takes a number of seconds")
        return float(value), None, None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{action} takes a non-empty string")
    if action == "view":
        words = value.split()
        if not (value in VIEWS or (len(words) == 2 and words[0] == "host")):
            raise ValueError(f"view {value!r}: one of {', '.join(VIEWS)}, or 'host NAME'")
    if action == "screenshot" and not re.fullmatch(r"[\w.-]+", value):
        raise ValueError("screenshot takes a file name without a directory (letters, digits, . _ -)")
    if action == "run":
        request, question = operation(value)
        return value, request, question
    return value, None, None


def operation(text: str) -> tuple[Request, str | None]:
    """The request (and confirmation question) the `hvc` verb in ``text`` would run.

    The verb's own click command parses the words, so names, options, defaults and checks
    are the command line's; only its last call, which would open a backend and run the job,
    is replaced by one that hands the request back.
    """
    import click

    import console.cli  # noqa: F401 - first: cli_ops needs it, and it registers cli_ops' verbs as it loads
    from console import cli_ops, cli_services

    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r}: {exc}") from None
    words = words[1:] if words[:1] == ["hvc"] else words
    verbs = {c.name: c for c in (*cli_ops.COMMANDS, *cli_services.COMMANDS)
             if c.name and not isinstance(c, click.Group)}
    if not words or words[0] not in verbs:
        raise ValueError(f"{(words or [''])[0]!r} is not an operation; one of {', '.join(sorted(verbs))}")
    command = verbs[words[0]]
    asked: list[tuple[dict[str, Any], Request, str | None]] = []

    def capture(ctx: click.Context, opts: dict[str, Any], request: Request, question: str | None = None) -> None:
        asked.append((opts, request, question))

    run, cli_ops._run = cli_ops._run, capture
    try:
        with command.make_context(f"hvc {words[0]}", words[1:]) as ctx:
            command.invoke(ctx)
    except click.exceptions.Exit:
        raise ValueError(f"{text!r} does not name an operation to run") from None
    except (click.ClickException, BadInput) as exc:
        raise ValueError(f"{text!r}: {exc.format_message() if isinstance(exc, click.ClickException) else exc}") \
            from None
    finally:
        cli_ops._run = run
    if not asked:
        raise ValueError(f"{text!r} does not start an operation")
    opts, request, question = asked[0]
    if any(opts.get(key) for key in _BACKEND_OPTIONS):
        raise ValueError("backend options (-c, --demo, --fleet, --scale, --read-only) go on the 'hvc play' line")
    return request, question


def _key_line(lines: list[str], start: int, end: int, key: str | None) -> int | str:
    """The line of ``key = …`` between two lines (1-based), or the first of them."""
    pattern = re.compile(rf"^\s*{re.escape(key or '')}\s*=")
    for n in range(max(start, 1), end + 1):
        if n <= len(lines) and pattern.match(lines[n - 1]):
            return n
    return start or "?"
