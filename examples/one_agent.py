"""One agent and no graph: ``Runner.ask(agent=...)``, the same run as typed stream events,
and a tool that reads its run through ``ToolContext``.

    python examples/one_agent.py

answers through the configured reasoning tier (with no key: the embedded model, four
model calls, under a minute on 2 CPU cores; expect a 0.5B model's sentences).
tests/test_examples.py runs it with a scripted tier.
"""

import asyncio
import uuid

from tierflow import Agent, AgentLimits, Runner, RunRecord, ToolContext, tool
from tierflow.runner import NodeStarted, RunFinished, Token, ToolCallEvent, ToolResultEvent

NOTES: dict[str, list[str]] = {}  # per conversation; a real app would use its database


@tool
def save_note(text: str, run: ToolContext) -> str:
    """Save a note in the current conversation.

    Args:
        text: What to remember, in a few words.
    """
    # `run` is filled in by tierflow (thread id, sensitive flag, deps); the model never
    # sees it in the tool's schema and cannot set it.
    notes = NOTES.setdefault(run.thread_id or "no-thread", [])
    notes.append(text)
    return f"saved; {len(notes)} note(s) in this conversation"


NOTETAKER = Agent(
    name="notetaker",
    tier="reasoning",
    tools=[save_note],
    tool_choice="required_first",  # small models tend to answer without calling the tool
    limits=AgentLimits(max_tool_rounds=1),  # one round of tool calls, then it must answer
    instructions="You keep notes. Call save_note with the user's fact, then confirm briefly.",
)


async def ask(runner: Runner, question: str, thread_id: str) -> RunRecord:
    """The whole run at once."""
    return await runner.ask(question, agent=NOTETAKER, thread_id=thread_id)


async def stream(runner: Runner, question: str, thread_id: str) -> RunRecord:
    """The same, printing events as they happen; returns the final record."""
    async for event in runner.stream(question, agent=NOTETAKER, thread_id=thread_id):
        match event:
            case NodeStarted(node=node, tier=tier):
                print(f"[{node} on tier {tier}]")
            case ToolCallEvent(tool=name, args=args):
                print(f"[calls {name} {args}]")
            case ToolResultEvent(tool=name, ok=ok):
                print(f"[{name} {'ok' if ok else 'failed'}]")
            case Token(text=text):  # on a constrained backend (the embedded model): its JSON
                print(text, end="", flush=True)
            case RunFinished(record=record):
                print()
                return record
    raise RuntimeError("the stream ended without a record")


async def main() -> None:
    thread = f"notes-{uuid.uuid4().hex[:8]}"  # a new conversation (threads are checkpointed)
    async with Runner() as runner:  # one checkpointer and one set of clients for both runs
        record = await ask(runner, "Note: the demo is on Friday.", thread)
        print(record.status, record.steps[-1].backend, record.answer)
        record = await stream(runner, "Note: bring the HDMI adapter.", thread)
        print(record.status, NOTES)


if __name__ == "__main__":
    asyncio.run(main())
