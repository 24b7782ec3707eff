"""The BFCL benchmark's adaptation and scoring, without the model: BFCL function docs become
tierflow tools, replies are read by tierflow's real turn plan, BFCL's checker scores them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolCall

from tierflow.agents._turn import AgentTurnPlan, ModelTurn, turn_schema
from tierflow.settings import TierflowSettings

pytest.importorskip("bfcl_eval")

from tierflow.bench import bfcl

DISTANCE: dict[str, Any] = {
    "name": "geo.distance",
    "description": "Distance between two points.",
    "parameters": {
        "type": "dict",
        "properties": {
            "origin": {"type": "tuple", "items": {"type": "float"}, "description": "(lat, lon)."},
            "target": {"type": "tuple", "items": {"type": "float"}, "description": "(lat, lon)."},
            "unit": {"type": "string", "enum": ["km", "mi"], "description": "Unit."},
            "options": {
                "type": "dict",
                "properties": {"round": {"type": "boolean", "description": "Round it."}},
                "description": "Extras.",
            },
        },
        "required": ["origin", "target"],
    },
}
WEATHER: dict[str, Any] = {
    "name": "weather.now",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "dict",
        "properties": {"city": {"type": "string", "description": "City name."}},
        "required": ["city"],
    },
}
SIMPLE = {"id": "simple_python_x", "question": [[{"role": "user", "content": "?"}]]}
SIMPLE_ANSWER = {
    "id": "simple_python_x",
    "ground_truth": [
        {"geo.distance": {"origin": [[48.85, 2.35]], "target": [[51.5, -0.12]], "unit": ["km", ""]}}
    ],
}
GOOD_ARGS = {"origin": [48.85, 2.35], "target": [51.5, -0.12], "unit": "km"}


def call(name: str, args: dict[str, Any]) -> ToolCall:
    return ToolCall(name=name, args=args, id="abc123XYZ", type="tool_call")


@pytest.fixture(autouse=True)
def _bfcl(settings: TierflowSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # BFCL makes result/score folders under this root when first imported.
    monkeypatch.setenv("BFCL_PROJECT_ROOT", str(tmp_path / "bfcl"))
    bfcl.load_bfcl(settings)


def test_function_docs_become_tools_with_json_schema_types() -> None:
    [tool] = bfcl.bfcl_tools([DISTANCE])
    assert tool.name == "geo_distance"  # OpenAI's name rule has no '.'
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", tool.spec()["function"]["name"])
    props = tool.parameters["properties"]
    assert tool.parameters["type"] == "object"
    assert props["origin"]["type"] == "array" and props["origin"]["items"]["type"] == "number"
    assert props["options"]["type"] == "object"
    assert props["options"]["properties"]["round"]["type"] == "boolean"
    assert DISTANCE["parameters"]["type"] == "dict"  # the item's own doc is left as it was
    # The constrained turn's schema embeds the converted arguments schema.
    schema = turn_schema([tool], None, True)
    [item] = schema["anyOf"][0]["properties"]["tool_calls"]["items"]["anyOf"]
    assert item["properties"]["arguments"] == tool.parameters


def test_bfcl_checker_scores_calls_by_the_original_names() -> None:
    entry = {**SIMPLE, "function": [DISTANCE]}
    assert bfcl.score(entry, SIMPLE_ANSWER, [call("geo_distance", GOOD_ARGS)], "simple_python") == (
        True,
        None,
    )
    wrong = {**GOOD_ARGS, "unit": "mi"}
    ok, error = bfcl.score(entry, SIMPLE_ANSWER, [call("geo_distance", wrong)], "simple_python")
    assert not ok and error and error.startswith("value_error")
    assert bfcl.score(entry, SIMPLE_ANSWER, [], "simple_python") == (False, "no_tool_call")


def test_multiple_needs_the_right_function() -> None:
    entry = {"id": "multiple_x", "question": SIMPLE["question"], "function": [WEATHER, DISTANCE]}
    answer = {**SIMPLE_ANSWER, "id": "multiple_x"}
    ok, error = bfcl.score(entry, answer, [call("weather_now", {"city": "Paris"})], "multiple")
    assert not ok and error == "simple_function_checker:wrong_func_name"
    assert bfcl.score(entry, answer, [call("geo_distance", GOOD_ARGS)], "multiple")[0]


def test_replies_are_read_by_tierflows_turn_plan(settings: TierflowSettings) -> None:
    tools = bfcl.bfcl_tools([DISTANCE])
    plan = AgentTurnPlan(tools, None, True)
    native, constrained = bfcl.tool_mode_backends(
        settings
    )  # builds clients lazily: no server started
    entry = {**SIMPLE, "function": [DISTANCE]}

    fenced = AIMessage(
        f'```json\n{{"name": "geo_distance", "arguments": {json.dumps(GOOD_ARGS)}}}\n```'
    )
    turn = plan.parse(native, fenced)
    assert isinstance(turn, ModelTurn) and turn.recovered
    assert bfcl.native_calls(turn) == []  # plain tool calling: a miss
    assert bfcl.score(entry, SIMPLE_ANSWER, turn.tool_calls, "simple_python")[0]  # recovered

    tool_calls = AIMessage("", tool_calls=[call("geo_distance", GOOD_ARGS)])
    assert len(bfcl.native_calls(plan.parse(native, tool_calls))) == 1

    reply = {"tool_calls": [{"name": "geo_distance", "arguments": GOOD_ARGS}]}
    turn = plan.parse(constrained, AIMessage(json.dumps(reply)))
    assert bfcl.score(entry, SIMPLE_ANSWER, turn.tool_calls, "simple_python") == (True, None)


@pytest.mark.parametrize("category", bfcl.CATEGORIES)
def test_bundled_answers_score_correct_through_the_adaptation(category: str) -> None:
    """The first bundled items, answered with their own ground truth under the tool names
    the model sees, pass BFCL's checker: the name mapping and loaders fit the data."""
    from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry

    entries = load_dataset_entry(category)[:5]
    answers = {a["id"]: a for a in load_ground_truth_entry(category)}
    for entry in entries:
        answer = answers[entry["id"]]
        [expected] = answer["ground_truth"]
        [(name, params)] = expected.items()
        names = {t.name for t in bfcl.bfcl_tools(entry["function"])}
        model_name = name.replace(".", "_")
        assert model_name in names
        args = {p: values[0] for p, values in params.items() if values[0] != ""}
        assert bfcl.score(entry, answer, [call(model_name, args)], category) == (True, None)
