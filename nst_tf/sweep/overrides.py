"""A job's overrides (its .hydra/overrides.yaml) read as Hydra's override grammar reads them,
without Hydra: the sweep's records are files, read after the sweep by whoever asks.

Covers what a job's overrides hold: `key=value`, `+key=value`, `~key`; values that are numbers,
booleans, null, strings (quoted or not, with Hydra's escapes), lists and dicts of them. What it
does not cover is kept as written: a function such as `int(1)`, which sweepers evaluate before
they write a job's overrides."""

import re
from collections.abc import Callable
from typing import Any

# Hydra's value tokens (hydra/grammar/OverrideLexer.g4); as in its lexer, the longest match is
# the token, and of two as long, the earlier.
_DIGITS = r"[0-9](?:_?[0-9])*"
_INT = r"(?:0|[1-9](?:_?[0-9])*)"
_POINT_FLOAT = rf"(?:{_INT}?\.{_DIGITS}|{_INT}\.)"  # the longer first: re takes the first
_TOKENS = [(kind, re.compile(pattern)) for kind, pattern in (
    ("(", r"[ \t]*\([ \t]*"),
    (",", r"[ \t]*,[ \t]*"),
    (")", r"[ \t]*\)"),
    ("[", r"\[[ \t]*"),
    ("]", r"[ \t]*\]"),
    ("{", r"\{[ \t]*"),
    ("}", r"[ \t]*\}"),
    (":", r"[ \t]*:[ \t]*"),
    ("=", r"[ \t]*=[ \t]*"),
    ("float", rf"[+-]?(?:(?:{_INT}|{_POINT_FLOAT})[eE][+-]?{_DIGITS}|{_POINT_FLOAT}"
              r"|[Ii][Nn][Ff]|[Nn][Aa][Nn])"),
    ("int", rf"[+-]?{_INT}"),
    ("bool", r"[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]"),
    ("null", r"[Nn][Uu][Ll][Ll]"),
    ("char", r"[/\-\\+.$%*@?|]"),
    ("id", r"[a-zA-Z_][a-zA-Z0-9_\-]*"),
    ("esc", r"(?:\\\\|\\[()\[\]{}:=, \t])+"),
    ("ws", r"[ \t]+"),
    ("quoted", r"\"(?:(?:\\\\)*|.*?[^\\](?:\\\\)*)\"|'(?:(?:\\\\)*|.*?[^\\](?:\\\\)*)'"),
    ("interpolation", r"\$\{[^}]+\}"),
)]
# Tokens a primitive is made of; a dict's key allows neither ":" nor interpolations.
_PRIMITIVE = {"id", "null", "int", "float", "bool", "interpolation", "char", ":", "esc", "ws"}
_KEY = _PRIMITIVE - {":", "interpolation"}
_ESCAPED_QUOTE = {"'": re.compile(r"(\\)+'"), '"': re.compile(r'(\\)+"')}
_CONVERT: dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "null": lambda _: None, "bool": lambda word: word.lower() == "true",
    "esc": lambda text: text[1::2],  # each escaped character
}


def parse_override(override: str) -> tuple[str, Any]:
    """(key without its +/~ prefix, value): `alpha=1e-3` -> ("alpha", 0.001); a deletion
    (`~key`) has the value None."""
    key, _, text = override.partition("=")
    if key.startswith("~"):
        return key.lstrip("~"), None
    key = key.lstrip("+")
    try:
        return key, _Parser(text.lstrip(" \t")).value()
    except ValueError:  # beyond what a job's overrides hold: as written
        return key, text


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.at = 0

    def value(self) -> Any:
        if not self.tokens:
            return ""  # key= sets the empty string
        value = self.element()
        if self.at != len(self.tokens):
            raise ValueError("a sweep or a function, not one value")
        return value

    def peek(self) -> str | None:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else None

    def take(self, kind: str) -> None:
        if self.peek() != kind:
            raise ValueError(f"expected {kind}")
        self.at += 1

    def element(self) -> Any:
        if self.peek() == "[":
            return self.sequence("[", "]", self.element)
        if self.peek() == "{":
            return dict(self.sequence("{", "}", self.pair))
        if self.peek() == "quoted":
            self.at += 1
            return _unquote(self.tokens[self.at - 1][1])
        return self.primitive(_PRIMITIVE)

    def sequence(self, start: str, end: str, item: Callable[[], Any]) -> list[Any]:
        self.take(start)
        items = []
        while self.peek() != end:
            if items:
                self.take(",")
            items.append(item())
        self.take(end)
        return items

    def pair(self) -> tuple[Any, Any]:
        key = self.primitive(_KEY)
        self.take(":")
        return key, self.element()

    def primitive(self, allowed: set[str]) -> Any:
        start = self.at
        while self.peek() in allowed:
            self.at += 1
        tokens = self.tokens[start:self.at]
        while tokens and tokens[0][0] == "ws":
            tokens = tokens[1:]
        while tokens and tokens[-1][0] == "ws":
            tokens = tokens[:-1]
        if not tokens or self.peek() == "(":
            raise ValueError("not a primitive")
        if len(tokens) > 1:  # a string, un-escaped
            return "".join(text[1::2] if kind == "esc" else text for kind, text in tokens)
        kind, text = tokens[0]
        return _CONVERT.get(kind, str)(text)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    at = 0
    while at < len(text):
        matches = [(match.end(), -rank, kind) for rank, (kind, pattern) in enumerate(_TOKENS)
                   if (match := pattern.match(text, at))]
        if not matches:
            raise ValueError(f"no token at {text[at:]!r}")
        end, _, kind = max(matches)
        tokens.append((kind, text[at:end]))
        at = end
    return tokens


def _unquote(text: str) -> str:
    """A quoted value's text: a backslash escapes a quote or a backslash before a quote."""
    quote, text = text[0], text[1:]
    parts = []
    while match := _ESCAPED_QUOTE[quote].search(text):
        start, stop = match.span()
        parts.append(text[:start] + text[start + 1:stop:2])
        text = text[stop:]
    parts.append(text[:-1])
    return "".join(parts)
