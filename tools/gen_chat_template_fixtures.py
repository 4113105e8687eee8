#!/usr/bin/env python3
"""gen_chat_template_fixtures.py — writes tests/fixtures/chat_templates.json, the reference that
tests/unit/test_chat_template.c checks frontend/jinja/ against byte for byte.

The reference is transformers' own rendering function (render_jinja_template in
transformers.utils.chat_template_utils, which apply_chat_template calls): jinja2's
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, transformers' tojson filter and
its raise_exception / strftime_now globals. Each case stores the exact context the template
sees (render_jinja_template always passes `messages`, `tools`, `documents` and
`add_generation_prompt`, then the keyword arguments such as bos_token) and either the rendered
text or the message of the exception the template raises.

Templates: (a) the default model's own template, read from the GGUF that tools/fetch_model.sh
fetches (key tokenizer.chat_template; skipped with a warning when the model is absent); then
templates written here in the style of widely published families — ChatML (Qwen2), Llama 3
headers, Llama 3.1 with tools and dates, Mistral [INST], Qwen3 (namespace(), reversed loops,
tojson, tool calls, thinking), Gemma, a Hermes-style tool template with a recursive macro — and
small synthetic templates for filters, tests, whitespace control and Python semantics.

Contexts avoid JSON numbers with integral float values (1.0): cJSON cannot tell them from ints.

Usage: .venv/bin/python tools/gen_chat_template_fixtures.py [out.json]
Deterministic: rerunning produces an identical file.
"""

import json
import os
import subprocess
import sys

import jinja2
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- templates ----

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

LLAMA31 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

QWEN3 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

# Hermes-style tool use: a recursive macro, dict literals, `json_spec.items` (a dict *method* in
# jinja2, a well-known quirk that renders "Union[]"), |items, |string, |replace, loop.last.
HERMES = """{%- macro json_to_python_type(json_spec) %}
{%- set basic_type_map = {
    "string": "str",
    "number": "float",
    "integer": "int",
    "boolean": "bool"
} %}

{%- if basic_type_map[json_spec.type] is defined %}
    {{- basic_type_map[json_spec.type] }}
{%- elif json_spec.type == "array" %}
    {{- "list[" +  json_to_python_type(json_spec.items) + "]"}}
{%- elif json_spec.type == "object" %}
    {%- if json_spec.additionalProperties is defined %}
        {{- "dict[str, " + json_to_python_type(json_spec.additionalProperties) + ']'}}
    {%- else %}
        {{- "dict" }}
    {%- endif %}
{%- elif json_spec.type is iterable %}
    {{- "Union[" }}
    {%- for t in json_spec.type %}
      {{- json_to_python_type({"type": t}) }}
      {%- if not loop.last %}
        {{- "," }}
    {%- endif %}
    {%- endfor %}
    {{- "]" }}
{%- else %}
    {{- "Any" }}
{%- endif %}
{%- endmacro %}

{{- bos_token }}
{%- if tools %}
{{- '<|im_start|>system\\nYou are a function calling AI model. Here are the available tools: <tools> ' }}
{%- for tool in tools %}
    {%- if tool.function is defined %}
        {%- set tool = tool.function %}
    {%- endif %}
    {{- '{"type": "function", "function": ' }}
    {{- '{"name": "' + tool.name + '", ' }}
    {{- '"description": "' + tool.name + '(' }}
    {%- for param_name, param_fields in tool.parameters.properties|items %}
        {{- param_name + ": " + json_to_python_type(param_fields) }}
        {%- if not loop.last %}
            {{- ", " }}
        {%- endif %}
    {%- endfor %}
    {{- ")" }}
    {%- if tool.return is defined %}
        {{- " -> " + json_to_python_type(tool.return) }}
    {%- endif %}
    {{- " - " + tool.description + "\\n\\n" }}
    {%- for param_name, param_fields in tool.parameters.properties|items %}
        {%- if loop.first %}
            {{- "    Args:\\n" }}
        {%- endif %}
        {{- "        " + param_name + "(" + json_to_python_type(param_fields) + "): " + param_fields.description|trim }}
    {%- endfor %}
    {{- '", "parameters": ' }}
    {%- if tool.parameters.properties | length == 0 %}
        {{- "{}" }}
    {%- else %}
        {{- tool.parameters|tojson }}
    {%- endif %}
    {{- "}" }}
    {%- if not loop.last %}
        {{- "\\n" }}
    {%- endif %}
{%- endfor %}
{{- " </tools><|im_end|>\\n" }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == "user" or message.role == "system" or (message.role == "assistant" and message.tool_calls is not defined) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
    {%- for tool_call in message.tool_calls %}
       {{- '\\n<tool_call>\\n' }}
           {%- if tool_call.function is defined %}
               {%- set tool_call = tool_call.function %}
           {%- endif %}
           {{- '{' }}
           {{- '"name": "' }}
           {{- tool_call.name }}
           {{- '"' }}
           {{- ', '}}
           {%- if tool_call.arguments is defined %}
               {{- '"arguments": ' }}
               {%- if tool_call.arguments is string %}
                   {{- tool_call.arguments }}
               {%- else %}
                   {{- tool_call.arguments|tojson }}
               {%- endif %}
           {%- endif %}
           {{- '}' }}
           {{- '\\n</tool_call>' }}
    {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.previtem and loop.previtem.role != "tool" %}
            {{- '<|im_start|>tool\\n' }}
        {%- endif %}
        {{- '<tool_response>\\n' }}
        {{- message.content }}
        {%- if not loop.last %}
            {{- '\\n</tool_response>\\n' }}
        {%- else %}
            {{- '\\n</tool_response>' }}
        {%- endif %}
        {%- if not loop.last and loop.nextitem.role != "tool" %}
            {{- '<|im_end|>' }}
        {%- elif loop.last %}
            {{- '<|im_end|>' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# ---- synthetic templates: filters, tests, operators, whitespace ----

FILTERS = """{%- set users = messages | selectattr('role', 'equalto', 'user') | list %}
{%- set others = messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list %}
users={{ users | length }} others={{ others | join(',') }} roles={{ messages | map(attribute='role') | unique | list }}
first={{ (messages | first).role | upper }} last={{ (messages | last)['role'] | capitalize }}
{{ messages[0].content | trim | title }}|{{ messages[0].content | lower | replace('a', '4') }}|{{ '  pad  ' | trim }}|{{ 'x-y-z' | replace('-', '+', 1) }}
{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A', 'c'] | sort(case_sensitive=true) }} {{ [3, 1, 2] | sort(reverse=true) }} {{ messages | sort(attribute='role') | map(attribute='role') | join('/') }}
{{ [1, 2, 3] | sum }} {{ [1.5, 2] | sum }} {{ [4, 9, 2] | max }} {{ [4, 9, 2] | min }} {{ ['b', 'a'] | max }} {{ messages | map(attribute='content') | map('length') | list }}
{{ 3.14159 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 7 | round }} {{ 2.675 | round(2) }} {{ 1.5 | round(method='floor') }} {{ 1.2 | round(0, 'ceil') }} {{ -3 | abs }} {{ -2.5 | abs }}
{{ '42' | int + 1 }} {{ '4.7' | int }} {{ 'x' | int(7) }} {{ 4.7 | int }} {{ '2.5' | float }} {{ 'no' | float }} {{ true | int }} {{ 3 | float }} {{ 3 | string ~ 'x' }}
{{ undefined_thing | default('dflt') }} {{ '' | default('empty', true) }} {{ none | default('kept') }} {{ false | d('f', boolean=true) }}
{{ {'b': 2, 'a': 1} | dictsort }} {{ {'b': 1, 'a': 2} | dictsort(by='value') }} {{ {'k': 'v', 'n': 1} | items | list }}
{{ 'line1\\nline2\\n\\nline4' | indent }}|{{ 'a\\nb' | indent(2, first=true) }}|{{ 'a\\n\\nb' | indent('> ', blank=true) }}
{{ '<a href="x">&\\'</a>' | e }} {{ 'safe' | safe }} {{ [1, 2] | list | length }} {{ 'héllo' | list }} {{ 'abc' | reverse }} {{ [1, 2, 3] | reverse | list }}
{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} {{ [0, 1, '', 'a', none] | select | list }} {{ [5, 10, 15] | select('divisibleby', 5) | list }} {{ [1, 5, 9] | select('gt', 4) | list }}
{{ messages | map(attribute='missing', default='?') | join }} {{ messages | selectattr('name', 'defined') | map(attribute='name') | list }} {{ [[1, 2], [3, 4]] | map(attribute=1) | list }}
{{ {'a': 1} | attr('items') is callable }} {{ messages[0] | attr('role') }}! {{ 'abc' | count }} {{ x_list | first }}{{ x_list | last }}
"""

TESTS = """{%- for v in [none, true, false, 0, 1, -2, 1.5, 'str', '', [], [1], {}, {'a': 1}, undefined_name] %}
{{ loop.index0 }}: {{ v is defined }} {{ v is none }} {{ v is boolean }} {{ v is true }} {{ v is false }} {{ v is number }} {{ v is integer }} {{ v is float }} {{ v is string }} {{ v is mapping }} {{ v is iterable }} {{ v is sequence }} {{ v is callable }} {{ v is undefined }}
{%- endfor %}
{{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'aB' is lower }} {{ 2 is eq 2 }} {{ 2 is ne 3 }} {{ 2 is lt 3 }} {{ 2 is le 2 }} {{ 3 is gt 2 }} {{ 3 is ge 4 }} {{ 'a' is in 'cat' }} {{ 2 is in [1, 2] }}
{{ none is sameas none }} {{ true is sameas true }} {{ 1 is sameas true }} {{ 5 is not none }} {{ not 5 is none }} {{ range is callable }} {{ 'x' is not string }}
"""

OPERATORS = """{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ -2 ** 2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}
{{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 1e16 }} {{ 1e15 }} {{ 1.5e-7 }} {{ 0.0001 }} {{ 123456789.125 }} {{ 10 / 4 }} {{ 3 * 1.0 }} {{ true + true }} {{ 2.0 }} {{ -0.0 }}
{{ 'ab' ~ 1 ~ none ~ true ~ [1] ~ undefined_name }} {{ 'ab' + 'cd' }} {{ [1] + [2, 3] }} {{ 'ab' * 3 }} {{ 3 * [0] }}
{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ (1, 2) == (1, 2) }} {{ [1, 2] == (1, 2) }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }} {{ none == none }} {{ {'a': 1} == {'a': 1} }}
{{ 'b' in 'abc' }} {{ 'z' not in 'abc' }} {{ 2 in [1, 2] }} {{ 'a' in {'a': 1} }} {{ 'x' in undefined_name }} {{ not true }} {{ not 0 and 1 }} {{ 0 or 'x' }} {{ '' or [] }} {{ 1 and 'y' }} {{ none or none }}
{{ 'yes' if 1 > 0 else 'no' }} {{ 'yes' if 0 else 'no' }}|{{ 'only' if false }}|{{ ('a' if true) ~ 'b' }} {{ 'x' if none is none else 'y' if true else 'z' }}
{{ [1, 'two', 3.5, none, true, [2], {'k': 'v'}, ('t',), ()] }} {{ {'q': "it's", 'd': 'say "hi"', 'b': 'back\\\\slash', 'n': 'new\\nline', 'tab': '\\t'} }} {{ 'both \\' and "' }}
{{ 'abcdef'[1:4] }} {{ 'abcdef'[::2] }} {{ 'abcdef'[::-1] }} {{ 'abcdef'[-2:] }} {{ 'abcdef'[:-2] }} {{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][::-2] }} {{ 'héllo wörld'[1:8] }} {{ 'héllo'[-1] }} {{ 'héllo'[::-1] }}
{{ 'a' 'b' "c" }} {{ '\\u00e9\\x41\\101\\q' }} {{ "tab\\there" }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }} {{ 1.5e3 }} {{ (1, 2) }} {{ (1,) }} {{ [] }} {{ {} }}
{{ messages[0].role }} {{ messages[0]['role'] }} {{ messages.0.role }} {{ messages[-1].content[:5] }} {{ messages[10] }}|{{ messages[0].nope }}|{{ messages[0]['nope'] is defined }}
{%- set a, b = 1, 2 %} {{ a }}{{ b }} {% set t = (3, 4) %}{% set c, d = t %}{{ c }}{{ d }} {{ range(5) | list }} {{ range(2, 10, 3) | list }} {{ range(5, 0, -2) | list }} {{ range(0) | list }}
{{ dict(a=1, b='x') }} {{ namespace(x=1).x }} {{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b') }} {{ {'a': 1}.get('b', 'd') }} {{ {'a': 1, 'b': 2}.keys() | list }} {{ {'a': 1, 'b': 2}.values() | list }} {{ {'a': 1}.items() | list }}
"""

STRINGS = """{%- set s = messages[1].content %}
{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ '__x__'.strip('_') }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|{{ '\\u3000 wide \\xa0'.strip() }}|
{{ s.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a b c d'.split(' ', 2) }} {{ 'a b c d'.rsplit(' ', 1) }} {{ '  lead  trail  '.split(None, 1) }} {{ '  lead  trail  '.rsplit(None, 1) }} {{ 'x'.split('x') }} {{ ''.split() }} {{ ''.split(',') }}
{{ 'l1\\nl2\\r\\nl3\\rl4\\n'.splitlines() }} {{ 'Hello'.startswith('He') }} {{ 'Hello'.startswith(('x', 'H')) }} {{ 'Hello'.endswith('lo') }} {{ 'Hello'.endswith('x') }}
{{ 'mIxEd CaSe'.upper() }} {{ 'mIxEd CaSe'.lower() }} {{ "they're bill's 1st-class"  .title() }} {{ "they're bill's 1st-class" | title }} {{ 'hELLO wORLD'.capitalize() }} {{ 'école ÉTÉ straße'.upper() }} {{ 'ÉCOLE Straße ΣΑΣ'.lower() }}
{{ 'aaa'.replace('a', 'b') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'abc'.replace('', '-') }} {{ 'abc'.find('c') }} {{ 'héllo'.find('l') }} {{ 'abc'.find('z') }} {{ 'abcabc'.rfind('b') }} {{ 'banana'.count('an') }} {{ '-'.join(['a', 'b', 'c']) }}
{{ '123'.isdigit() }} {{ '12a'.isdigit() }} {{ 'abc'.isalpha() }} {{ 'ab1'.isalnum() }} {{ ' \\t'.isspace() }} {{ 'abc'.islower() }} {{ 'ABC'.isupper() }} {{ 'prefix_x'.removeprefix('prefix_') }} {{ 'x.py'.removesuffix('.py') }}
{{ s | length }} {{ s[0] }} {{ messages[1].content.split('</think>')[-1].lstrip('\\n') }}
"""

WHITESPACE = """Start
  {% if true %}
  indented line kept
  {% endif %}
{%- for m in messages %}
  {{ m.role }}
{%- endfor %}
  {#- comment that eats the spaces around it -#}
after comment
{% set x = 5 -%}
   x={{ x }}
{%+ if true %} lstrip disabled{% endif %}
{% if true +%}
trim disabled{% endif %}
{% raw %}{{ raw text }} {% not a tag %}{% endraw %}
{{- ' trimmed both sides ' -}}
   tail text {{ 'v' }}
{# a comment
spanning lines #}
end
"""

MACROS = """{%- macro render_msg(m, prefix='> ', suffix=none) -%}
{{ prefix }}{{ m.role }}: {{ m.content }}{{ suffix if suffix is not none else '' }}
{%- endmacro %}
{%- macro wrap(tag) -%}<{{ tag }}>{{ caller() }}</{{ tag }}>{%- endmacro %}
{%- for m in messages %}
{{ render_msg(m) }}
{{ render_msg(m, suffix=' [' ~ loop.index ~ '/' ~ loop.length ~ ']', prefix='* ') }}
{%- endfor %}
{% call wrap('b') %}bold {{ messages | length }}{% endcall %}
{% set captured %}captured {{ 1 + 1 }}{% endset %}{{ captured | upper }} {{ captured | length }}
{% filter upper %}filtered {{ 'text' }}{% endfilter %}
{% with greeting = 'hi', who = messages[0].role %}{{ greeting }} {{ who }}{% endwith %}
{%- for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}
{% for x in [] %}never{% else %}for-else ran{% endfor %}
{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }}{{ ', ' if not loop.last }}{% endfor %}
{% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{{ loop.cycle(' odd', ' even') }} {% endfor %}
{% for m in messages %}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.previtem.role if loop.previtem is defined else '-' }}{{ loop.nextitem.role if loop.nextitem is defined else '-' }} {% endfor %}
{% set outer = 'top' %}{% for i in [1, 2] %}{% set outer = 'inner' ~ i %}{{ outer }} {% endfor %}{{ outer }}
{% set ns = namespace(total=0, names=[]) %}{% for m in messages %}{% set ns.total = ns.total + m.content | length %}{% set ns.names = ns.names + [m.role] %}{% endfor %}{{ ns.total }} {{ ns.names }}
{%- generation %} generated {% endgeneration %}
{{ render_msg }}"""

TOOL_SCHEMA = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris "},
                "unit": {
                    "type": "string",
                    "enum": ["celsius", "fahrenheit"],
                    "description": "Unit",
                },
                "days": {"type": "integer", "description": "Forecast days"},
                "hourly": {"type": ["boolean", "integer"], "description": "Hourly data?"},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags"},
                "extra": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                    "description": "Extra numbers",
                },
            },
            "required": ["city"],
        },
        "return": {"type": "string"},
    },
}
TOOL_SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web «vite» 🔎",
        "parameters": {"type": "object", "properties": {}},
    },
}

# ---- conversations ----

SYSTEM = {
    "role": "system",
    "content": "You are a terse assistant. Réponds en français si on te parle français.",
}
U1 = {"role": "user", "content": "Hello! How are you?"}
A1 = {"role": "assistant", "content": "I'm fine, thanks. How can I help?"}
U2 = {
    "role": "user",
    "content": "Explain {{ jinja }} and {% raw %} please — with ünïcödé, 中文, العربية and 😀🎉.",
}
A2 = {
    "role": "assistant",
    "content": "  Sure: use {{ name }} to print; {# comments #} vanish.\n\nDone.  ",
}
U3 = {"role": "user", "content": "Last question:\n\ttabs\r\nand CRLF\u2028separator"}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


TOOL_CALL_MSG = {
    "role": "assistant",
    "content": "",
    "tool_calls": [call("get_weather", {"city": "Zürich", "days": 3, "ratio": 0.25})],
}
TOOL_CALL_STR = {
    "role": "assistant",
    "content": "Let me check both.",
    "tool_calls": [
        call("get_weather", '{"city": "Oslo"}'),
        call("search", {"q": 'a "quoted" query', "n": None, "ok": True}),
    ],
}
TOOL_RESULT = {"role": "tool", "content": '{"temperature": 21.5, "sky": "clear"}'}
TOOL_RESULT2 = {"role": "tool", "content": "results: none"}
THINKING = {"role": "assistant", "content": "<think>\nThe user greets me.\n</think>\n\nHi there!"}
REASONING = {
    "role": "assistant",
    "content": "Final answer.",
    "reasoning_content": "\nStep 1, step 2.\n",
}

TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}
SMOL_TOKENS = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
LLAMA_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def chat_cases(tokens, with_system=True):
    """The conversation shapes every chat template gets."""
    cases = [
        ("single_turn", [U1], True, {}),
        ("single_turn_no_gen", [U1], False, {}),
        ("multi_turn", [U1, A1, U2], True, {}),
        ("multi_turn_ends_assistant", [U1, A1, U2, A2], False, {}),
        ("unicode_and_braces", [U2, A2, U3], True, {}),
    ]
    if with_system:
        cases += [
            ("system_single", [SYSTEM, U1], True, {}),
            ("system_multi", [SYSTEM, U1, A1, U3], True, {}),
        ]
    return [(n, m, g, dict(tokens, **kw)) for n, m, g, kw in cases]


def build_specs(default_template):
    """(name, description, template, [(case name, messages, add_generation_prompt, kwargs)])."""
    llama_date = dict(LLAMA_TOKENS, date_string="26 Jul 2024")
    llama_2025 = dict(LLAMA_TOKENS, date_string="01 Jan 2025")
    specs = []
    if default_template is not None:
        specs.append((
            "default_model",
            "GGUF tokenizer.chat_template of the default model (SmolLM2-135M-Instruct)",
            default_template,
            chat_cases(SMOL_TOKENS),
        ))
    specs += [
        ("chatml_qwen2", "ChatML with a default system prompt (Qwen2 style)", CHATML,
         chat_cases(TOKENS)),
        ("llama3", "Llama 3 header style", LLAMA3, chat_cases(LLAMA_TOKENS)),
        ("llama31_tools", "Llama 3.1 style: date, tools as JSON with indent, tool calls", LLAMA31,
         [(n, m, g, dict(kw, date_string="26 Jul 2024"))
          for n, m, g, kw in chat_cases(LLAMA_TOKENS)] + [
             ("tools_in_user_message", [SYSTEM, U1, TOOL_CALL_MSG, TOOL_RESULT], True,
              dict(llama_date, tools=[TOOL_SCHEMA])),
             ("tools_in_system", [U1], True,
              dict(llama_2025, tools=[TOOL_SCHEMA, TOOL_SEARCH], tools_in_user_message=False)),
             ("no_messages_undefined_error", [], True, dict(llama_2025, tools=[TOOL_SEARCH])),
         ]),
        ("mistral_inst",
         "Mistral [INST] with the system message merged into the first user turn", MISTRAL,
         chat_cases(TOKENS) + [
             ("non_alternating_raises", [U1, U2], True, TOKENS),
             ("bad_role_raises", [SYSTEM, U1, A1, TOOL_RESULT], True, TOKENS),
         ]),
        ("qwen3", "Qwen3 style: namespace, reversed loop, tojson, tool calls, thinking", QWEN3,
         chat_cases(TOKENS) + [
             ("tools_and_calls",
              [SYSTEM, U1, TOOL_CALL_MSG, TOOL_RESULT, TOOL_RESULT2, TOOL_CALL_STR, TOOL_RESULT],
              True, dict(TOKENS, tools=[TOOL_SCHEMA, TOOL_SEARCH])),
             ("thinking_history", [U1, THINKING, U2, REASONING], False, TOKENS),
             ("thinking_last", [U1, THINKING], False, TOKENS),
             ("enable_thinking_false", [U1], True, dict(TOKENS, enable_thinking=False)),
         ]),
        ("gemma", "Gemma style: model role, trim, raise on a system message", GEMMA,
         chat_cases(TOKENS, with_system=False) + [("system_raises", [SYSTEM, U1], True, TOKENS)]),
        ("hermes_tools", "Hermes style tool use: recursive macro, dict literal, |items", HERMES,
         chat_cases(TOKENS) + [
             ("tools_and_calls", [SYSTEM, U1, TOOL_CALL_STR, TOOL_RESULT, TOOL_RESULT2, A1], True,
              dict(TOKENS, tools=[TOOL_SCHEMA, TOOL_SEARCH])),
         ]),
        ("filters", "synthetic: filters", FILTERS,
         [("all", [SYSTEM, U1, dict(A1, name="bot"), U2], False, dict(TOKENS, x_list=[7, 8, 9]))]),
        ("tests", "synthetic: tests", TESTS, [("all", [U1], False, TOKENS)]),
        ("operators", "synthetic: operators, literals, printing", OPERATORS,
         [("all", [U1, A2], False, TOKENS)]),
        ("strings", "synthetic: Python string methods", STRINGS,
         [("all", [U1, A2], False, TOKENS)]),
        ("whitespace", "synthetic: whitespace control", WHITESPACE,
         [("all", [U1, A1], False, TOKENS), ("empty", [], False, TOKENS)]),
        ("macros_loops_scopes", "synthetic: macros, call, set blocks, loops, scoping", MACROS,
         [("all", [SYSTEM, U1, A1, U3], False, TOKENS)]),
    ]
    return specs


def default_model_template():
    """tokenizer.chat_template of the GGUF tools/fetch_model.sh provides, or None."""
    try:
        out = subprocess.run([os.path.join(ROOT, "tools", "fetch_model.sh")], check=True,
                             capture_output=True, text=True).stdout
        path = out.strip().splitlines()[-1]
    except (subprocess.CalledProcessError, OSError, IndexError) as e:
        print(f"warning: no default model ({e}); its template is left out", file=sys.stderr)
        return None
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def render(template, messages, add_generation_prompt, kwargs):
    """(context, expected, error): the context the template sees, and what transformers does."""
    kwargs = dict(kwargs)
    tools = kwargs.pop("tools", None)
    context = {"messages": messages, "tools": tools, "documents": None,
               "add_generation_prompt": add_generation_prompt}
    context.update(kwargs)
    try:
        out, _ = render_jinja_template(conversations=[messages], tools=tools, documents=None,
                                       chat_template=template,
                                       add_generation_prompt=add_generation_prompt, **kwargs)
        return context, out[0], None
    except jinja2.exceptions.TemplateError as e:
        # raised: the template called raise_exception (a plain TemplateError); otherwise jinja2
        # itself failed (UndefinedError and the like), whose message we only need to contain
        raised = type(e) is jinja2.exceptions.TemplateError
        return context, None, {"error": str(e), "raised": raised}


def dump(doc):
    """JSON with one template header and one case per line: readable diffs, under 100 KB."""

    def j(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    lines = ["{", f' "generator": {j(doc["generator"])},',
             f' "reference": {j(doc["reference"])},', ' "templates": [']
    for ti, t in enumerate(doc["templates"]):
        head = {k: v for k, v in t.items() if k != "cases"}
        lines.append("  " + j(head)[:-1] + ',"cases":[')
        for ci, c in enumerate(t["cases"]):
            lines.append("   " + j(c) + ("," if ci + 1 < len(t["cases"]) else ""))
        lines.append("  ]}" + ("," if ti + 1 < len(doc["templates"]) else ""))
    lines += [" ]", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == doc
    return text


def main():
    default_out = os.path.join(ROOT, "tests", "fixtures", "chat_templates.json")
    out_path = sys.argv[1] if len(sys.argv) > 1 else default_out
    templates = []
    for name, desc, src, cases in build_specs(default_model_template()):
        rendered = []
        for cname, messages, gen, kwargs in cases:
            context, expected, error = render(src, messages, gen, kwargs)
            case = {"name": cname, "context": context}
            if error is None:
                case["expected"] = expected
            else:
                case.update(error)
            rendered.append(case)
        templates.append({"name": name, "description": desc, "template": src, "cases": rendered})
    reference = (f"transformers {transformers.__version__} render_jinja_template, "
                 f"jinja2 {jinja2.__version__}")
    doc = {"generator": "tools/gen_chat_template_fixtures.py", "reference": reference,
           "templates": templates}
    text = dump(doc)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    n_cases = sum(len(t["cases"]) for t in templates)
    print(f"{out_path}: {len(templates)} templates, {n_cases} cases, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
