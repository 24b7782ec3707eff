"""A support-triage graph: billing stays on local backends, tech may use hosted ones."""

import asyncio

from tierflow import Agent, BuildContext, Route, Runner, register_graph, router_graph, tool


@tool
def invoice_status(invoice_id: str) -> dict[str, str]:
    """Look up an invoice.

    Args:
        invoice_id: The invoice number, e.g. "INV-1042".
    """
    return {"invoice_id": invoice_id, "status": "paid twice", "refund": "pending"}


def triage_graph(ctx: BuildContext):  # -> StateGraph, compiled by the Runner
    billing = Agent(
        name="billing",
        tier="reasoning",
        local_only=True,
        tools=[invoice_status],
        instructions="You resolve billing questions. Never invent amounts.",
    )
    tech = Agent(name="tech", tier="reasoning", instructions="You are a support engineer.")
    return router_graph(
        ctx.tiers,
        {
            "billing": Route(description="invoices, refunds, payments", agent=billing),
            "tech": Route(description="bugs, errors, outages", agent=tech),
        },
    )


if __name__ == "__main__":
    register_graph("triage", triage_graph)
    record = asyncio.run(Runner().ask("Invoice INV-1042 was charged twice", graph="triage"))
    print(record.route, record.steps[-1].backend, record.answer)
