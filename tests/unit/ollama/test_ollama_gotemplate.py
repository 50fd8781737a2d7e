"""Table tests for the Go text/template subset renderer."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from llamarunner.proxy.ollama.gotemplate import Stringer, TemplateError, go_json, parse

MESSAGES = [{"Role": "system", "Content": "S"}, {"Role": "user", "Content": "U1"},
            {"Role": "assistant", "Content": "A1"}, {"Role": "user", "Content": "U2"}]
DATA: dict[str, Any] = {"System": "sys", "Prompt": "hi", "Response": "", "Messages": MESSAGES,
                        "N": 3, "F": 1.5, "Empty": [], "Map": {"b": 2, "a": 1},
                        "Nested": {"Inner": {"Deep": "x"}}}


@pytest.mark.parametrize("source,expected", [
    # text, fields, literals
    ("plain text", "plain text"),
    ("{{ .Prompt }}", "hi"),
    ("{{.Prompt}}", "hi"),
    ("{{ .Nested.Inner.Deep }}", "x"),
    ("[{{ .Missing }}]", "[]"),  # missingkey=zero: nothing is printed
    ("{{ .Missing.Deeper }}", ""),
    ('{{ "a\\tb\\u00e9" }}', "a\tb\u00e9"),
    ("{{ `raw\\n` }}", "raw\\n"),
    ("{{ 42 }} {{ -7 }} {{ 1.5 }} {{ true }} {{ nil }}", "42 -7 1.5 true "),
    ("{{ .F }} {{ .N }} {{ .Map }} {{ .Empty }}", "1.5 3 map[a:1 b:2] []"),
    ("{{/* a comment */}}x", "x"),
    # trim markers
    ("a  {{- .Prompt -}}  b", "ahib"),
    ("a\n{{- .Prompt }}\nb", "ahi\nb"),
    ("a {{- /* gone */ -}} b", "ab"),
    ("{{ .Prompt -}}\n\n  !", "hi!"),
    ("x {{-3}}", "x -3"),  # "{{-3}}" is a number, not a trim marker
    # if / else if / else
    ("{{ if .System }}[{{ .System }}]{{ end }}", "[sys]"),
    ("{{ if .Response }}yes{{ else }}no{{ end }}", "no"),
    ("{{ if .Missing }}1{{ else if .Empty }}2{{ else if .N }}3{{ else }}4{{ end }}", "3"),
    ("{{ if not .Empty }}empty{{ end }}", "empty"),
    ("{{ if and .System .Prompt }}both{{ end }}", "both"),
    ("{{ if or .Missing .Prompt }}{{ or .Missing .Prompt }}{{ end }}", "hi"),
    ("{{ and .Prompt .Missing }}|{{ and .Prompt .System }}", "|sys"),
    ("{{ if eq .Prompt \"x\" \"hi\" }}match{{ end }}", "match"),
    ("{{ if ne .N 3 }}no{{ else }}three{{ end }}", "three"),
    ("{{ if lt .N 4 }}<{{ end }}{{ if ge .N 3 }}>={{ end }}{{ if gt .F 1 }}>{{ end }}",
     "<>=>"),
    # with
    ("{{ with .Nested.Inner }}{{ .Deep }}{{ end }}", "x"),
    ("{{ with .Missing }}a{{ else }}b{{ end }}", "b"),
    ("{{ with .Missing }}a{{ else with .System }}{{ . }}{{ end }}", "sys"),
    # range
    ("{{ range .Messages }}{{ .Role }}:{{ .Content }};{{ end }}",
     "system:S;user:U1;assistant:A1;user:U2;"),
    ("{{ range $i, $m := .Messages }}{{ $i }}{{ $m.Role }} {{ end }}",
     "0system 1user 2assistant 3user "),
    ("{{ range $m := .Messages }}{{ $m.Content }}{{ end }}", "SU1A1U2"),
    ("{{ range .Empty }}x{{ else }}none{{ end }}", "none"),
    ("{{ range $k, $v := .Map }}{{ $k }}={{ $v }} {{ end }}", "a=1 b=2 "),
    ("{{ range 3 }}{{ . }}{{ end }}", "012"),
    ("{{ range .Messages }}{{ if eq .Role \"assistant\" }}{{ break }}{{ end }}"
     "{{ .Content }}{{ end }}", "SU1"),
    ("{{ range .Messages }}{{ if eq .Role \"user\" }}{{ continue }}{{ end }}"
     "{{ .Content }}{{ end }}", "SA1"),
    ("{{ range .Messages }}{{ $.System }}{{ end }}", "syssyssyssys"),
    # variables and scope
    ("{{ $x := .Prompt }}{{ $x }}{{ $x = \"changed\" }}{{ $x }}", "hichanged"),
    ("{{ $n := 0 }}{{ range .Messages }}{{ $n = .Content }}{{ end }}{{ $n }}", "U2"),
    ("{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
     "{{ if $last }}last:{{ .Content }}{{ end }}{{ end }}", "last:U2"),
    # functions and pipelines
    ("{{ len .Messages }} {{ len .Prompt }} {{ len .Map }}", "4 2 2"),
    ("{{ (index .Messages 1).Content }} {{ index .Map \"b\" }}", "U1 2"),
    ("{{ range slice .Messages 2 }}{{ .Role }}{{ end }}", "assistantuser"),
    ("{{ .Prompt | printf \"<%s>\" }}", "<hi>"),
    ("{{ printf \"%d-%v-%q-%%\" .N .F .Prompt }}", '3-1.5-"hi"-%'),
    ("{{ print .Prompt 1 2 \"x\" }}", "hi1 2x"),
    ("{{ json .Map }} {{ json .Prompt }} {{ json \"<a&b>\" }}",
     '{"a":1,"b":2} "hi" "\\u003ca\\u0026b\\u003e"'),
    ("{{ .Prompt | len | printf \"%d\" }}", "2"),
])
def test_renders(source: str, expected: str) -> None:
    assert parse(source).render(DATA) == expected


def test_stringer_prints_its_text_and_exposes_its_value() -> None:
    tools = Stringer([Stringer({"Function": {"Name": "f"}}, '{"name":"f"}')], '[{"name":"f"}]')
    data = {"Tools": tools}
    assert parse("{{ .Tools }}").render(data) == '[{"name":"f"}]'
    assert parse("{{ range .Tools }}{{ .Function.Name }}={{ . }}{{ end }}").render(data) == (
        'f={"name":"f"}')
    assert parse("{{ json .Tools }}|{{ len .Tools }}").render(data) == '[{"name":"f"}]|1'
    assert parse("{{ if .Tools }}y{{ end }}").render({"Tools": Stringer([], "[]")}) == ""


def test_dates() -> None:
    today = datetime.date.today()
    assert parse("{{ currentDate }}").render({}) == today.isoformat()
    assert parse("{{ yesterdayDate }}").render({}) == (
        today - datetime.timedelta(days=1)).isoformat()


@pytest.mark.parametrize("source,names", [
    ("{{ .Prompt }}", {"prompt"}),
    ("{{ range .Messages }}{{ .Role }}{{ end }}", {"messages", "role"}),
    ("{{ $.System }}{{ if .Response }}{{ end }}", {"system", "response"}),
    ("{{ $x := len (slice $.Messages 1) }}{{ $x }}", {"x", "messages"}),
    ("text only", set()),
])
def test_variables_are_ollamas_vars(source: str, names: set[str]) -> None:
    assert parse(source).variables() == names


@pytest.mark.parametrize("source,expected", [
    ("{{ .System }} USER: {{ .Prompt }} ASSISTANT: {{ .Response }}</s>",
     "sys USER: hi ASSISTANT: "),
    ("{{ if .System }}{{ .System }}{{ end }}|{{ .Prompt }}|{{ .Response }}|tail{{ .N }}",
     "sys|hi|"),
    ("{{ if .Prompt }}<u>{{ .Prompt }}{{ .Response }}</u>{{ end }}after", "<u>hi"),
    ("no response at all", "no response at all"),
])
def test_up_to_response_cuts_what_follows_the_answer(source: str, expected: str) -> None:
    assert parse(source).up_to_response().render(DATA) == expected


def test_with_response_appends_the_answer() -> None:
    assert parse("Q: {{ .Prompt }} A: ").with_response().render(
        {**DATA, "Response": "42"}) == "Q: hi A: 42"


@pytest.mark.parametrize("source,named", [
    ('{{ define "x" }}a{{ end }}', "{{define}}"),
    ('{{ template "x" . }}', "{{template}}"),
    ('{{ block "x" . }}a{{ end }}', "{{block}}"),
    ("{{ .Prompt | upper }}", 'function "upper"'),
    ("{{ toTypeScriptType .X }}", 'function "toTypeScriptType"'),
    ("{{ if .Prompt }}x", "{{if}} has no {{end}}"),
    ("{{ range .Messages }}x{{ else }}y", "has no {{end}}"),
    ("x{{ end }}", "unexpected {{end}}"),
    ("{{ .Prompt", "unclosed action"),
    ("{{ break }}", "outside range"),
    ("{{ 'c' }}", "character constants"),
    ("{{ (eq .A .B }}", "unclosed left paren"),
    ("{{ .Method .Arg }}", "method or field with arguments"),
    ("{{ $a, $b := .Messages }}", "bad variable declaration"),
    ("{{ }}", "missing value"),
    ("{{ \"unterminated }}", "unterminated string"),
    ("{{/* never closed }}", "unclosed comment"),
])
def test_unsupported_or_broken_templates_name_the_construct(source: str, named: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(source).render(DATA)
    assert named in str(info.value)
    assert str(info.value).startswith("line ")


@pytest.mark.parametrize("source,named", [
    ("{{ $undefined }}", "undefined variable: $undefined"),
    ("{{ eq .Prompt 1 }}", "incompatible types for comparison"),
    ("{{ index .Messages 9 }}", "index out of range"),
    ("{{ len .N }}", "len of int"),
    ("{{ range .Prompt }}{{ end }}", "range can't iterate over hi"),
])
def test_execution_errors_name_the_problem(source: str, named: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(source).render(DATA)
    assert named in str(info.value)


@pytest.mark.parametrize("value,text", [
    ({"b": [1, 2], "a": "<x>"}, '{"a":"\\u003cx\\u003e","b":[1,2]}'),
    (Stringer({"k": 1}, "custom"), "custom"),
    ("é", '"é"'),
])
def test_go_json(value: object, text: str) -> None:
    assert go_json(value) == text
