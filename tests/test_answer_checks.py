"""The cheap checks behind right answers: keyword routing cues, the librarian's
candidate sentences, the web fallback's topic gate, and number grounding over JSON."""

from __future__ import annotations

import json

from tierflow.agents.reading import asks_quantity, on_topic, sentences
from tierflow.graphs.keywords import KeywordRouter
from tierflow.guardrails.builtin.output import ungrounded_numbers


def test_keyword_router_decides_only_when_one_route_leads() -> None:
    router = KeywordRouter(
        {
            "data": ([r"orders?\b", r"pedidos?\b"], []),
            "docs": ([r"factura", r"conserv"], []),
            "web": ([r"news"], [r"on the web", r"en internet"]),
        }
    )
    # two policy cues beat one data word
    decision = router.classify("¿Cuántos años se conservan los datos de pedidos y facturas?")
    assert decision.route == "docs" and decision.scores == {"data": 1, "docs": 2}
    # a strong cue (3) beats two weak ones
    assert router.classify("Search orders and pedidos en internet").route == "web"
    tie = router.classify("orders news")
    assert tie.route is None and tie.scores == {"data": 1, "web": 1}
    assert router.classify("Bonjour").route is None
    assert router.classify("borders").route is None  # cues match at a word's start


def test_quantity_questions_keep_only_sentences_with_a_number() -> None:
    passage = {
        "source": "care.md",
        "position": 2,
        "text": "# Linen\n\nWash linen at low temperatures.\nNever wash linen hotter than 40 °C.",
    }
    assert asks_quantity("Bei höchstens wie viel Grad darf man Leinen waschen?")
    assert asks_quantity("¿Cuántos años se conservan los datos?")
    assert not asks_quantity("What is the password policy?")
    every = [s for s, _ in sentences([passage], "linen wash temperature")]
    assert every == ["Wash linen at low temperatures.", "Never wash linen hotter than 40 °C."]
    only = sentences([passage], "linen wash temperature", numbers=True)
    assert only == [("Never wash linen hotter than 40 °C.", "[care.md#2]")]


def test_an_offline_quote_must_share_the_query_topic() -> None:
    query = "how many days to return an item"
    assert on_topic('"You have 30 days to return an item." [returns.md#1]', query)
    assert not on_topic('"Card payments use 3-D Secure." [payments.txt#1]', "euro news today")
    # two shared words of five is not the topic: exchange rates at checkout are no news
    rate = '"Pay in NOK at the exchange rate shown at checkout." [payments-faq.txt#1]'
    assert not on_topic(rate, "latest news euro exchange rate")
    # the librarian asks two shared words, not half
    vat = '"Orders are invoiced with 0% VAT (reverse charge)." [payments-faq.txt#1]'
    assert not on_topic(vat, "maximum temperature to wash linen", half=False)
    assert on_topic(rate, "latest news euro exchange rate", half=False)


def test_numbers_in_json_tool_results_count_as_evidence() -> None:
    result = json.dumps({"text": "Express: €14.95\n15 minutes"})  # "\u20ac14.95", "\n15"
    assert ungrounded_numbers("Express costs €14.95, acknowledged in 15 minutes.", [result]) == []
    assert ungrounded_numbers("It costs €16.95.", [result]) == ["16.95"]
