"""A renderer for the subset of Go's text/template that Ollama model templates use.

Supported: text with ``{{- ... -}}`` trim markers, comments, fields (``.A.B``), ``$`` and
``$name`` variables (``:=``/``=``), pipelines (``|``), parenthesised commands, string,
number, ``true``/``false``/``nil`` literals; ``if``/``else if``/``else with``/``else``,
``range`` (lists, maps, ints; one or two variables; ``else``; ``break``/``continue``) and
``with``; the functions ``and or not eq ne lt le gt ge len index slice print printf
println json currentDate yesterdayDate``. Anything else (``define``, ``template``,
``block``, other functions, method calls with arguments) is a :class:`TemplateError`
that names the construct, raised when the template is parsed.

Values are plain Python data: mappings are read by key (a missing key is empty, like
Ollama's ``missingkey=zero``), :class:`Stringer` stands for a Go value with a ``String``
method (Ollama's tools and tool-call arguments print as JSON).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["Stringer", "Template", "TemplateError", "go_json", "parse"]


class TemplateError(ValueError):
    """A template this renderer cannot parse or execute; the message names the construct."""


@dataclass(frozen=True)
class Stringer:
    """A value whose printed form is ``text`` (Go's ``String() string``); fields, ``range``
    and ``len`` see ``value``."""

    value: Any
    text: str


# --- lexing ------------------------------------------------------------------------------

_SPACE: Final = " \t\r\n"
_KEYWORDS: Final = frozenset({"if", "else", "end", "range", "with", "break", "continue",
                              "define", "template", "block"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD_CHAIN = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?)")


@dataclass(frozen=True)
class _Token:
    kind: str  # "field", "var", "dot", "ident", "string", "number", "op"
    text: str
    value: Any = None


@dataclass
class _Action:
    tokens: list[_Token]
    line: int


def _lex(source: str) -> list[str | _Action]:
    """Split a template into text pieces and actions, applying the trim markers."""
    items: list[str | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                items.append(text)
            return items
        inner = start + 2
        if source.startswith("-", inner) and source[inner + 1:inner + 2] in tuple(_SPACE):
            text = text.rstrip(_SPACE)
            inner += 2
        if text:
            items.append(text)
        line = source.count("\n", 0, start) + 1
        tokens, end, trim_next = _lex_action(source, inner, line)
        if tokens is not None:
            items.append(_Action(tokens, line))
        pos = end


def _lex_action(source: str, pos: int, line: int) -> tuple[list[_Token] | None, int, bool]:
    """Tokens of one action from ``pos``; (None for a comment, end position, trim after)."""
    probe = pos
    while probe < len(source) and source[probe] in _SPACE:
        probe += 1
    if source.startswith("/*", probe):
        close = source.find("*/", probe + 2)
        if close < 0:
            raise TemplateError(f"line {line}: unclosed comment")
        rest = close + 2
        if source.startswith("}}", rest):
            return None, rest + 2, False
        if source.startswith(" -}}", rest) or source.startswith("\t-}}", rest):
            return None, rest + 4, True
        raise TemplateError(f"line {line}: comment does not end the action")
    tokens: list[_Token] = []
    i = pos
    while True:
        if i >= len(source):
            raise TemplateError(f"line {line}: unclosed action (missing }}}})")
        ch = source[i]
        if ch in _SPACE:
            j = i
            while j < len(source) and source[j] in _SPACE:
                j += 1
            if source.startswith("-}}", j):
                return tokens, j + 3, True
            i = j
            continue
        if source.startswith("}}", i):
            return tokens, i + 2, False
        if ch == '"':
            value, i = _string_literal(source, i, line)
            tokens.append(_Token("string", "string", value))
            continue
        if ch == "`":
            close = source.find("`", i + 1)
            if close < 0:
                raise TemplateError(f"line {line}: unterminated raw string")
            tokens.append(_Token("string", "string", source[i + 1:close]))
            i = close + 1
            continue
        if ch == "'":
            raise TemplateError(f"line {line}: character constants are not supported")
        if source.startswith(":=", i):
            tokens.append(_Token("op", ":="))
            i += 2
            continue
        if ch in "=|(),":
            tokens.append(_Token("op", ch))
            i += 1
            continue
        if ch == "$":
            match = _IDENT.match(source, i + 1)
            name = "$" + (match.group() if match else "")
            i = match.end() if match else i + 1
            chain = _FIELD_CHAIN.match(source, i)
            path = tuple(chain.group()[1:].split(".")) if chain else ()
            if chain:
                i = chain.end()
            tokens.append(_Token("var", name, path))
            continue
        if ch == ".":
            chain = _FIELD_CHAIN.match(source, i)
            if chain:
                tokens.append(_Token("field", chain.group(), tuple(chain.group()[1:].split("."))))
                i = chain.end()
            else:
                tokens.append(_Token("dot", "."))
                i += 1
            continue
        number = _NUMBER.match(source, i)
        if (ch.isdigit() or ch in "+-") and number and number.group() not in ("+", "-"):
            tokens.append(_Token("number", number.group(), _number(number.group(), line)))
            i = number.end()
            continue
        ident = _IDENT.match(source, i)
        if ident:
            tokens.append(_Token("ident", ident.group()))
            i = ident.end()
            continue
        raise TemplateError(f"line {line}: unexpected {ch!r} in action")


_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'",
                   "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _string_literal(source: str, pos: int, line: int) -> tuple[str, int]:
    out: list[str] = []
    i = pos + 1
    while i < len(source):
        ch = source[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\n":
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = source[i + 1:i + 2]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = source[i + 2:i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise TemplateError(f"line {line}: bad escape in string") from None
            i += 2 + width
        elif code.isdigit():
            out.append(chr(int(source[i + 1:i + 4], 8)))
            i += 4
        else:
            raise TemplateError(f"line {line}: bad escape \\{code} in string")
    raise TemplateError(f"line {line}: unterminated string")


def _number(text: str, line: int) -> int | float:
    clean = text.replace("_", "")
    try:
        if clean.lower().lstrip("+-").startswith("0x"):
            return int(clean, 16)
        if any(c in clean for c in ".eE"):
            value = float(clean)
            return int(value) if value.is_integer() and "." not in clean else value
        return int(clean)
    except ValueError:
        raise TemplateError(f"line {line}: bad number {text}") from None


# --- syntax tree -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Field:
    path: tuple[str, ...]


@dataclass(frozen=True)
class _Variable:
    name: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class _Dot:
    pass


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Function:
    name: str


@dataclass(frozen=True)
class _SubPipe:
    pipe: _Pipe
    path: tuple[str, ...]


_Arg = _Field | _Variable | _Dot | _Literal | _Function | _SubPipe


@dataclass(frozen=True)
class _Command:
    args: tuple[_Arg, ...]


@dataclass(frozen=True)
class _Pipe:
    decl: tuple[str, ...]
    assign: bool  # "=" (existing variables) rather than ":="
    commands: tuple[_Command, ...]
    line: int


@dataclass
class _Text:
    text: str


@dataclass
class _ActionNode:
    pipe: _Pipe


@dataclass
class _Branch:
    kind: str  # "if", "with", "range"
    pipe: _Pipe
    body: list[_Node]
    orelse: list[_Node] = field(default_factory=list)


@dataclass
class _Loop:
    kind: str  # "break", "continue"
    line: int


_Node = _Text | _ActionNode | _Branch | _Loop

FUNCTIONS: Final = frozenset({"and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "len",
                              "index", "slice", "print", "printf", "println", "json",
                              "currentDate", "yesterdayDate"})


class _Parser:
    def __init__(self, items: list[str | _Action]) -> None:
        self._items = items
        self._pos = 0
        self._loops = 0

    def parse(self) -> list[_Node]:
        nodes, stop = self._list()
        if stop is not None:
            raise TemplateError(f"line {stop.line}: unexpected {{{{{stop.tokens[0].text}}}}}")
        return nodes

    def _list(self) -> tuple[list[_Node], _Action | None]:
        """Nodes up to an {{else}} or {{end}} (returned, unconsumed), or to the end."""
        nodes: list[_Node] = []
        while self._pos < len(self._items):
            item = self._items[self._pos]
            if isinstance(item, str):
                nodes.append(_Text(item))
                self._pos += 1
                continue
            if not item.tokens:
                raise TemplateError(f"line {item.line}: missing value for command")
            head = item.tokens[0]
            if head.kind == "ident" and head.text in ("else", "end"):
                return nodes, item
            self._pos += 1
            nodes.append(self._action(item))
        return nodes, None

    def _action(self, action: _Action) -> _Node:
        head = action.tokens[0]
        if head.kind == "ident" and head.text in ("if", "with", "range"):
            return self._branch(head.text, action, action.tokens[1:])
        if head.kind == "ident" and head.text in ("break", "continue"):
            if self._loops == 0:
                raise TemplateError(f"line {action.line}: {{{{{head.text}}}}} outside range")
            if len(action.tokens) > 1:
                raise TemplateError(f"line {action.line}: unexpected words after "
                                    f"{{{{{head.text}}}}}")
            return _Loop(head.text, action.line)
        if head.kind == "ident" and head.text in ("define", "template", "block"):
            raise TemplateError(
                f"line {action.line}: {{{{{head.text}}}}} is not supported; write the "
                "template out in one piece")
        return _ActionNode(_pipeline(action.tokens, action.line, allow_decl=True))

    def _branch(self, kind: str, action: _Action, tokens: list[_Token]) -> _Branch:
        pipe = _pipeline(tokens, action.line, allow_decl=True, in_range=kind == "range")
        if kind == "range":
            self._loops += 1
        body, stop = self._list()
        if kind == "range":
            self._loops -= 1
        node = _Branch(kind, pipe, body)
        if stop is None:
            raise TemplateError(f"line {action.line}: {{{{{kind}}}}} has no {{{{end}}}}")
        self._pos += 1
        words = stop.tokens
        if words[0].text == "end":
            if len(words) > 1:
                raise TemplateError(f"line {stop.line}: unexpected words after {{{{end}}}}")
            return node
        # {{else}}, {{else if ...}} or {{else with ...}}
        if len(words) > 1:
            if words[1].kind == "ident" and words[1].text in ("if", "with") and kind != "range":
                # An else-if chain shares the outer {{end}}: parse it as a nested branch.
                node.orelse = [self._branch(words[1].text, stop, words[2:])]
                return node
            raise TemplateError(f"line {stop.line}: unexpected words after {{{{else}}}}")
        orelse, last = self._list()
        if last is None or last.tokens[0].text != "end" or len(last.tokens) > 1:
            where = last.line if last is not None else action.line
            raise TemplateError(f"line {where}: {{{{{kind}}}}} ... {{{{else}}}} has no "
                                "{{end}}")
        self._pos += 1
        node.orelse = orelse
        return node


def _pipeline(tokens: list[_Token], line: int, *, allow_decl: bool = False,
              in_range: bool = False) -> _Pipe:
    decl: tuple[str, ...] = ()
    assign = False
    for i, token in enumerate(tokens):
        if token.kind == "op" and token.text in (":=", "="):
            names = tokens[:i]
            ok = allow_decl and names and all(
                t.kind == "var" and not t.value and t.text != "$" for t in names[::2]) and all(
                t.kind == "op" and t.text == "," for t in names[1::2])
            count = (len(names) + 1) // 2
            if not ok or count > (2 if in_range else 1) or len(names) % 2 == 0:
                raise TemplateError(f"line {line}: bad variable declaration")
            decl = tuple(t.text for t in names[::2])
            assign = token.text == "="
            tokens = tokens[i + 1:]
            break
        if token.kind != "var" and not (token.kind == "op" and token.text == ","):
            break
    commands, rest = _commands(tokens, line)
    if rest:
        raise TemplateError(f"line {line}: unexpected {rest[0].text!r}")
    if not commands:
        raise TemplateError(f"line {line}: missing value for command")
    return _Pipe(decl, assign, tuple(commands), line)


def _commands(tokens: list[_Token], line: int) -> tuple[list[_Command], list[_Token]]:
    """Commands separated by "|", up to a ")" (returned in the rest) or the end."""
    commands: list[_Command] = []
    args: list[_Arg] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "op" and token.text == "|":
            if not args:
                raise TemplateError(f"line {line}: missing command before |")
            commands.append(_Command(tuple(args)))
            args = []
            i += 1
            continue
        if token.kind == "op" and token.text == ")":
            break
        if token.kind == "op" and token.text == "(":
            inner, rest = _commands(tokens[i + 1:], line)
            if not rest or rest[0].text != ")":
                raise TemplateError(f"line {line}: unclosed left paren")
            if not inner:
                raise TemplateError(f"line {line}: missing value in parentheses")
            consumed = len(tokens) - (i + 1) - len(rest)
            i += 1 + consumed + 1
            path: tuple[str, ...] = ()
            if i < len(tokens) and tokens[i].kind == "field":
                path = tokens[i].value
                i += 1
            args.append(_SubPipe(_Pipe((), False, tuple(inner), line), path))
            continue
        args.append(_operand(token, line))
        i += 1
    if args:
        commands.append(_Command(tuple(args)))
    elif commands:
        raise TemplateError(f"line {line}: missing command after |")
    return commands, tokens[i:]


def _operand(token: _Token, line: int) -> _Arg:
    if token.kind == "field":
        return _Field(token.value)
    if token.kind == "var":
        return _Variable(token.text, token.value)
    if token.kind == "dot":
        return _Dot()
    if token.kind in ("string", "number"):
        return _Literal(token.value)
    if token.kind == "ident":
        if token.text in ("true", "false"):
            return _Literal(token.text == "true")
        if token.text == "nil":
            return _Literal(None)
        if token.text in _KEYWORDS:
            raise TemplateError(f"line {line}: unexpected {{{{{token.text}}}}} here")
        if token.text not in FUNCTIONS:
            raise TemplateError(f'line {line}: function "{token.text}" is not supported')
        return _Function(token.text)
    raise TemplateError(f"line {line}: unexpected {token.text!r}")


# --- values ------------------------------------------------------------------------------

def _truth(value: Any) -> bool:
    if isinstance(value, Stringer):
        return _truth(value.value) if isinstance(value.value, list | Mapping) else True
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | tuple | Mapping):
        return bool(value)
    return True


def _field_of(value: Any, name: str) -> Any:
    if isinstance(value, Stringer):
        value = value.value
    if isinstance(value, Mapping):
        return value.get(name)  # Ollama executes with missingkey=zero
    return None


def _go_float(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        digits = exponent.lstrip("+-").rjust(2, "0")
        return f"{mantissa}e{sign}{digits}"
    return text[:-2] if text.endswith(".0") else text


def _printed(value: Any) -> str:
    """How Go's fmt prints a value with %v (what {{ . }} writes)."""
    if isinstance(value, Stringer):
        return value.text
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        inner = " ".join(f"{_printed(k)}:{_printed(v)}" for k, v in sorted(
            value.items(), key=lambda kv: str(kv[0])))
        return f"map[{inner}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_printed(v) for v in value) + "]"
    return str(value)


_GO_JSON_ESCAPES: Final = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                           ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def go_json(value: Any) -> str:
    """JSON the way Go's json.Marshal writes it: compact, sorted map keys, HTML escapes."""
    if isinstance(value, Stringer):
        return value.text
    text = json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False,
                      sort_keys=True)
    for char, escape in _GO_JSON_ESCAPES:
        text = text.replace(char, escape)
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, Stringer):
        return json.loads(value.text)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _length(value: Any, line: int) -> int:
    if isinstance(value, Stringer):
        value = value.value
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise TemplateError(f"line {line}: len of {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    return {bool: "bool", int: "int", float: "float64", str: "string"}.get(
        type(value), type(value).__name__)


def _comparable(a: Any, b: Any, line: int, name: str) -> None:
    numbers = (int, float)
    if isinstance(a, bool) != isinstance(b, bool) or (
            isinstance(a, numbers) != isinstance(b, numbers)) or (
            isinstance(a, str) != isinstance(b, str)):
        raise TemplateError(f"line {line}: {name}: incompatible types for comparison "
                            f"({_kind(a)} and {_kind(b)})")


def _eq(line: int, first: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError(f"line {line}: eq needs at least two arguments")
    first = first.value if isinstance(first, Stringer) else first
    for other in others:
        other = other.value if isinstance(other, Stringer) else other
        if first is None or other is None:
            if first is other:
                return True
            continue
        _comparable(first, other, line, "eq")
        if first == other:
            return True
    return False


def _order(line: int, name: str, a: Any, b: Any) -> bool:
    if not isinstance(a, int | float | str) or isinstance(a, bool):
        raise TemplateError(f"line {line}: {name}: invalid type for comparison ({_kind(a)})")
    _comparable(a, b, line, name)
    if name == "lt":
        return bool(a < b)
    if name == "le":
        return bool(a <= b)
    if name == "gt":
        return bool(a > b)
    return bool(a >= b)


def _index(line: int, value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Stringer):
            value = value.value
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list | tuple | str) and isinstance(key, int) and not isinstance(
                key, bool):
            if not 0 <= key < len(value):
                raise TemplateError(f"line {line}: index out of range: {key}")
            value = value[key]
        else:
            raise TemplateError(f"line {line}: can't index item of type {_kind(value)}")
    return value


def _slice(line: int, value: Any, *bounds: Any) -> Any:
    if isinstance(value, Stringer):
        value = value.value
    if not isinstance(value, list | tuple | str):
        raise TemplateError(f"line {line}: can't slice item of type {_kind(value)}")
    if len(bounds) > 2 or not all(isinstance(b, int) and not isinstance(b, bool)
                                  for b in bounds):
        raise TemplateError(f"line {line}: slice takes one or two integer indexes")
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else len(value)
    if not 0 <= start <= end <= len(value):
        raise TemplateError(f"line {line}: slice index out of range")
    return value[start:end]


def _sprint(args: Sequence[Any]) -> str:
    # Go's Sprint puts spaces between operands when neither side is a string.
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_printed(arg))
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([%vsdqfgtxX])")


def _sprintf(line: int, fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise TemplateError(f"line {line}: printf needs a format string")
    values = iter(args)

    def verb(match: re.Match[str]) -> str:
        kind = match.group(4)
        if kind == "%":
            return "%"
        try:
            value = next(values)
        except StopIteration:
            return f"%!{kind}(MISSING)"
        if kind == "q":
            return json.dumps(_printed(value), ensure_ascii=False)
        if kind in "dxX" and isinstance(value, int) and not isinstance(value, bool):
            return format(value, {"d": "d", "x": "x", "X": "X"}[kind])
        if kind in "fg" and isinstance(value, int | float) and not isinstance(value, bool):
            precision = match.group(3)
            if kind == "f":
                return f"{value:.{precision or 6}f}"
            return _go_float(float(value))
        return _printed(value)

    return _VERB.sub(verb, fmt)


def _date(days_back: int) -> Callable[..., str]:
    def today(*_: Any) -> str:
        return (datetime.date.today() - datetime.timedelta(days=days_back)).isoformat()
    return today


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# --- execution ---------------------------------------------------------------------------

class _Run:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.out: list[str] = []
        self.scopes: list[dict[str, Any]] = [{"$": root}]

    def nodes(self, nodes: list[_Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _ActionNode):
                value = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(_printed(value))
            elif isinstance(node, _Loop):
                raise _Break() if node.kind == "break" else _Continue()
            else:
                self.branch(node, dot)

    def scoped(self, nodes: list[_Node], dot: Any) -> None:
        self.scopes.append({})
        try:
            self.nodes(nodes, dot)
        finally:
            self.scopes.pop()

    def branch(self, node: _Branch, dot: Any) -> None:
        self.scopes.append({})  # variables declared in the pipeline live until {{end}}
        try:
            if node.kind == "range":
                self.range(node, dot)
                return
            value = self.pipe(node.pipe, dot, declare=node.kind != "range")
            if _truth(value):
                self.scoped(node.body, value if node.kind == "with" else dot)
            else:
                self.scoped(node.orelse, dot)
        finally:
            self.scopes.pop()

    def range(self, node: _Branch, dot: Any) -> None:
        value = self.pipe(node.pipe, dot, declare=False)
        if isinstance(value, Stringer):
            value = value.value
        items: list[tuple[Any, Any]]
        if value is None:
            items = []
        elif isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value, key=str)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        else:
            raise TemplateError(f"line {node.pipe.line}: range can't iterate over "
                                f"{_printed(value)}")
        if not items:
            self.scoped(node.orelse, dot)
            return
        for key, element in items:
            frame: dict[str, Any] = {}
            if len(node.pipe.decl) == 1:
                frame[node.pipe.decl[0]] = element
            elif len(node.pipe.decl) == 2:
                frame[node.pipe.decl[0]] = key
                frame[node.pipe.decl[1]] = element
            self.scopes.append(frame)
            try:
                self.nodes(node.body, element)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                self.scopes.pop()

    def pipe(self, pipe: _Pipe, dot: Any, *, declare: bool = True) -> Any:
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self.command(command, dot, pipe.line, value, piped=i > 0)
        if pipe.decl and declare:
            name = pipe.decl[0]
            if pipe.assign:
                for frame in reversed(self.scopes):
                    if name in frame:
                        frame[name] = value
                        break
                else:
                    raise TemplateError(f"line {pipe.line}: undefined variable: {name}")
            else:
                self.scopes[-1][name] = value
        return value

    def command(self, command: _Command, dot: Any, line: int, piped_value: Any,
                *, piped: bool) -> Any:
        head = command.args[0]
        if isinstance(head, _Function):
            return self.call(head.name, command.args[1:], dot, line, piped_value, piped)
        if len(command.args) > 1 or piped:
            raise TemplateError(f"line {line}: calling a method or field with arguments is "
                                "not supported")
        return self.arg(head, dot, line)

    def call(self, name: str, args: tuple[_Arg, ...], dot: Any, line: int,
             piped_value: Any, piped: bool) -> Any:
        def values() -> Iterator[Any]:
            for arg in args:
                yield self.arg(arg, dot, line)
            if piped:
                yield piped_value

        if name in ("and", "or"):
            last: Any = None
            count = 0
            for value in values():  # short-circuit, as Go 1.18+
                count += 1
                last = value
                if _truth(value) != (name == "and"):
                    return value
            if count == 0:
                raise TemplateError(f"line {line}: {name} needs at least one argument")
            return last
        evaluated = list(values())
        if name == "not":
            if len(evaluated) != 1:
                raise TemplateError(f"line {line}: not takes one argument")
            return not _truth(evaluated[0])
        if name == "eq":
            return _eq(line, *evaluated)
        if name == "ne":
            if len(evaluated) != 2:
                raise TemplateError(f"line {line}: ne takes two arguments")
            return not _eq(line, *evaluated)
        if name in ("lt", "le", "gt", "ge"):
            if len(evaluated) != 2:
                raise TemplateError(f"line {line}: {name} takes two arguments")
            return _order(line, name, *evaluated)
        if name == "len":
            if len(evaluated) != 1:
                raise TemplateError(f"line {line}: len takes one argument")
            return _length(evaluated[0], line)
        if name == "index":
            if not evaluated:
                raise TemplateError(f"line {line}: index needs an argument")
            return _index(line, *evaluated)
        if name == "slice":
            if not evaluated:
                raise TemplateError(f"line {line}: slice needs an argument")
            return _slice(line, *evaluated)
        if name == "print":
            return _sprint(evaluated)
        if name == "println":
            return " ".join(_printed(v) for v in evaluated) + "\n"
        if name == "printf":
            if not evaluated:
                raise TemplateError(f"line {line}: printf needs a format")
            return _sprintf(line, *evaluated)
        if name == "json":
            if len(evaluated) != 1:
                raise TemplateError(f"line {line}: json takes one argument")
            return go_json(evaluated[0])
        return _date(1 if name == "yesterdayDate" else 0)()

    def arg(self, arg: _Arg, dot: Any, line: int) -> Any:
        if isinstance(arg, _Literal):
            return arg.value
        if isinstance(arg, _Dot):
            return dot
        if isinstance(arg, _Field):
            return self.walk(dot, arg.path)
        if isinstance(arg, _Variable):
            for frame in reversed(self.scopes):
                if arg.name in frame:
                    return self.walk(frame[arg.name], arg.path)
            raise TemplateError(f"line {line}: undefined variable: {arg.name}")
        if isinstance(arg, _SubPipe):
            return self.walk(self.pipe(arg.pipe, dot), arg.path)
        return self.call(arg.name, (), dot, line, None, False)

    @staticmethod
    def walk(value: Any, path: tuple[str, ...]) -> Any:
        for name in path:
            value = _field_of(value, name)
        return value


# --- the template ------------------------------------------------------------------------

def _identifiers(nodes: list[_Node]) -> Iterator[str]:
    def of_pipe(pipe: _Pipe) -> Iterator[str]:
        for command in pipe.commands:
            for arg in command.args:
                if isinstance(arg, _Field):
                    yield from arg.path
                elif isinstance(arg, _Variable):
                    yield arg.name.lstrip("$")
                    yield from arg.path
                elif isinstance(arg, _SubPipe):
                    yield from of_pipe(arg.pipe)
                    yield from arg.path

    for node in nodes:
        if isinstance(node, _ActionNode):
            yield from of_pipe(node.pipe)
        elif isinstance(node, _Branch):
            yield from of_pipe(node.pipe)
            yield from _identifiers(node.body)
            yield from _identifiers(node.orelse)


def _shows_response(pipe: _Pipe) -> bool:
    return any(isinstance(arg, _Field | _Variable) and "Response" in arg.path
               for command in pipe.commands for arg in command.args)


def _cut_after_response(nodes: list[_Node], state: list[bool]) -> list[_Node]:
    """Ollama's trick for the last turn of an old-style template: drop everything after the
    first {{ .Response }} action, so the prompt ends where the answer begins."""
    kept: list[_Node] = []
    for node in nodes:
        if state[0]:
            continue
        if isinstance(node, _ActionNode) and _shows_response(node.pipe):
            state[0] = True
            kept.append(node)
        elif isinstance(node, _Branch):
            body = _cut_after_response(node.body, state)
            orelse = _cut_after_response(node.orelse, state)
            kept.append(_Branch(node.kind, node.pipe, body, orelse))
        else:
            kept.append(node)
    return kept


_RESPONSE_ACTION: Final = _ActionNode(_Pipe((), False, (_Command((_Field(("Response",)),)),), 0))


@dataclass(frozen=True)
class Template:
    """A parsed template; :meth:`render` executes it against plain data."""

    source: str
    nodes: tuple[_Node, ...]

    def variables(self) -> frozenset[str]:
        """Every field and variable name it mentions, lowercased (Ollama's ``Vars``)."""
        return frozenset(name.lower() for name in _identifiers(list(self.nodes)) if name)

    def render(self, data: Mapping[str, Any]) -> str:
        run = _Run(data)
        try:
            run.nodes(list(self.nodes), data)
        except (_Break, _Continue):  # pragma: no cover - the parser refuses them outside range
            raise TemplateError("break or continue outside range") from None
        return "".join(run.out)

    def up_to_response(self) -> Template:
        """This template without what follows its first ``{{ .Response }}``."""
        return Template(self.source, tuple(_cut_after_response(list(self.nodes), [False])))

    def with_response(self) -> Template:
        """This template with ``{{ .Response }}`` appended, as Ollama does for templates that
        name neither ``.Messages`` nor ``.Response``."""
        return Template(self.source, (*self.nodes, _RESPONSE_ACTION))


def parse(source: str) -> Template:
    """Parse a template; :class:`TemplateError` names what is not supported."""
    text = source.replace("\r\n", "\n")
    return Template(source, tuple(_Parser(_lex(text)).parse()))
