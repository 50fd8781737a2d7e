"""Table tests for the prompt a request's own template makes (Ollama's template values)."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.proxy.ollama.prompt import TemplateError, Thinking, render_prompt

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Colour?"}]

TURNS = ("{{ range .Messages }}<{{ .Role }}>{{ .Content }}</{{ .Role }}>{{ end }}<assistant>")
OLD_STYLE = ("{{ if .System }}<sys>{{ .System }}</sys>{{ end }}<user>{{ .Prompt }}</user>"
             "<assistant>{{ .Response }}</assistant>")


@pytest.mark.parametrize("template,messages,expected", [
    (TURNS, CHAT, "<system>Be brief.</system><user>Hi</user><assistant>Hello!</assistant>"
                  "<user>Colour?</user><assistant>"),
    # .System is every system text; consecutive messages of one role are merged.
    ("{{ .System }}|{{ range .Messages }}{{ .Content }};{{ end }}",
     [{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
      {"role": "user", "content": "u1"}, {"role": "user", "content": "u2"}],
     "a\n\nb|a\n\nb;u1\n\nu2;"),
    # Tool results are never merged.
    ("{{ range .Messages }}{{ .Role }}={{ .Content }}/{{ .ToolName }};{{ end }}",
     [{"role": "tool", "content": "1", "tool_name": "f"},
      {"role": "tool", "content": "2", "tool_name": "g"}],
     "tool=1/f;tool=2/g;"),
    # An old-style template runs once per turn; the last turn stops where the answer goes.
    (OLD_STYLE, CHAT, "<sys>Be brief.</sys><user>Hi</user><assistant>Hello!</assistant>"
                      "<user>Colour?</user><assistant>"),
    (OLD_STYLE, [{"role": "user", "content": "Hi"}], "<user>Hi</user><assistant>"),
    # Without .Response (or .Messages) Ollama appends it: earlier answers still show.
    ("Q: {{ .Prompt }} A: ", CHAT[1:], "Q: Hi A: Hello!Q: Colour? A: "),
    ("{{ .Prompt }}", [{"role": "user", "content": "just this"}], "just this"),
])
def test_render_prompt(template: str, messages: list[dict[str, Any]], expected: str) -> None:
    assert render_prompt(template, messages=messages) == expected


def test_suffix_gives_prompt_and_suffix() -> None:
    template = "<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}<MID>"
    assert render_prompt(template, prompt="def f(", suffix="return x",
                         messages=[{"role": "user", "content": "ignored"}]) == (
        "<PRE>def f(<SUF>return x<MID>")


def test_tools_and_tool_calls_as_ollama_gives_them() -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "required": ["city"],
                       "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    template = (
        "{{ if .Tools }}TOOLS {{ .Tools }}\n"
        "{{ range .Tools }}- {{ .Function.Name }}: {{ .Function.Description }} "
        "{{ .Function.Parameters.Required }} {{ .Function.Parameters.Properties }}\n"
        "{{ end }}{{ end }}"
        "{{ range .Messages }}{{ .Role }}:{{ .Content }}"
        "{{ range .ToolCalls }}CALL {{ .Function.Name }} {{ .Function.Arguments }}{{ end }}\n"
        "{{ end }}")
    assert render_prompt(template, messages=messages, tools=tools) == (
        'TOOLS [{"function":{"description":"Weather","name":"get_weather","parameters":'
        '{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}},'
        '"type":"function"}]\n'
        '- get_weather: Weather [city] {"city":{"type":"string"}}\n'
        "user:Paris?\n"
        'assistant:CALL get_weather {"city":"Paris"}\n'
        "tool:sunny\n")


def test_without_tools_the_tools_value_is_empty() -> None:
    assert render_prompt("{{ if .Tools }}x{{ else }}none {{ .Tools }}{{ end }} {{ .Messages }}",
                         messages=[]) == "none null []"


def test_arguments_sent_as_a_json_string_are_read() -> None:
    messages = [{"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": '{"a": 1}'}}]}]
    assert render_prompt(
        "{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Arguments }}{{ end }}{{ end }}",
        messages=messages) == '{"a":1}'


@pytest.mark.parametrize("think,expected", [
    (None, "false||false"), (True, "true||true"), (False, "false||true"),
    ("high", "true|high|true"),
])
def test_thinking_values(think: object, expected: str) -> None:
    assert render_prompt("{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}{{ .Messages }}",
                         thinking=Thinking.of(think)).startswith(expected)


def test_a_template_that_cannot_be_rendered_raises() -> None:
    with pytest.raises(TemplateError, match="define"):
        render_prompt('{{ define "x" }}{{ end }}', messages=CHAT)
