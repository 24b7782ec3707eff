"""The ready-made graphs. ``default`` is what ``tierflow ask`` runs: the router tier sends
the question to one of four specialists on the reasoning tier, each with its tools."""

from __future__ import annotations

from langgraph.graph import START, StateGraph

from tierflow.agents import Agent, add_agent
from tierflow.agents.specialists import CodeWorkflow, DocsWorkflow, SqlWorkflow, WebWorkflow
from tierflow.graphs.builder import (
    PlannerState,
    Route,
    planner_graph,
    router_graph,
    supervisor_graph,
)
from tierflow.graphs.context import BuildContext, GraphFactory
from tierflow.state import GraphState

_STYLE = (
    "Answer concisely. Base the answer on your tool results and cite what you used. "
    "If a tool fails, say so plainly instead of guessing."
)


# Cue words of each route, in the four languages the graph serves (see graphs/keywords.py).
# Hits skip the semantic router and the model; ties and misses fall through to them.
# fmt: off
_DATA_CUES = (
    r"orders?\b", r"commandes?\b", r"bestellung", r"pedidos?\b", r"customers?\b", r"clients?\b",
    r"kunden", r"clientes?\b", r"products?\b", r"produits?\b", r"produkte?\b", r"productos?\b",
    r"categor", r"kategorie", r"statu[st]", r"revenue", r"chiffre d.affaires", r"umsatz",
    r"ingresos", r"unit price", r"prix unitaire", r"stückpreis", r"precio unitario",
    r"units? (?:of|sold)", r"sold\b", r"vendu", r"verkauft", r"vendid", r"signed up", r"inscrit",
    r"registriert", r"registrad", r"ländercode", r"country code",
)
_DOCS_CUES = (
    r"polic", r"politique", r"richtlinie", r"política", r"handbook", r"employ", r"mitarbeiter",
    r"emplead", r"staff", r"personnel", r"return", r"retour", r"rückgabe", r"devol", r"shipping",
    r"envío", r"livraison", r"versand", r"delivery", r"express", r"warrant", r"garant", r"expense",
    r"dépense", r"spesen", r"gastos?\b", r"travel", r"voyage", r"reise", r"viaje", r"leave\b",
    r"congé", r"urlaub", r"vacacion", r"holiday", r"remote", r"télétravail", r"homeoffice",
    r"teletrabajo", r"password", r"mot de passe", r"passwort", r"contraseña", r"screen", r"écran",
    r"bildschirm", r"pantalla", r"gift card", r"carte.cadeau", r"gutschein", r"tarjetas? regalo",
    r"on-call", r"astreinte", r"bereitschaft", r"guardia", r"sev\d", r"breach", r"privacy",
    r"données personnelles", r"datenschutz", r"privacidad", r"retention", r"conserv",
    r"gespeichert", r"stored", r"hotel", r"aufbewahr", r"factura", r"invoice", r"facture",
    r"rechnung", r"budget", r"training", r"formation", r"weiterbildung", r"formación", r"goodwill",
    r"approv", r"approuv", r"genehmig", r"aprob", r"wash", r"lav(?:er|ar|age|ado)", r"wasch",
    r"shrink", r"rétréc", r"einlauf", r"encog", r"season", r"cast.iron", r"fonte", r"gusseisen",
    r"hierro fundido", r"oil", r"huil", r"öl", r"aceit", r"care guide", r"entretien", r"pflege",
    r"cuidado", r"oven", r"au four", r"ofen", r"horno", r"grad\b", r"degrees?\b", r"température",
    r"temperatur",
)
_CODE_CUES = (
    r"comput", r"calcul", r"berechne", r"rechne", r"exact", r"genau", r"prime",
    r"nombres? premiers?", r"primzahl", r"primo", r"fibonacci", r"factorial", r"factoriel",
    r"fakultät", r"sum of", r"somme", r"summe", r"suma", r"digits", r"chiffres", r"ziffern",
    r"dígitos", r"teiler", r"divisor", r"diviseur", r"pgcd", r"gcd", r"squares", r"carrés",
    r"quadrat", r"cuadrados", r"\d+\s*(?:\*\*|\^|\*|×)\s*\d+", r"elevado", r"puissance",
    r"hoch \d", r"power", r"seconds", r"secondes", r"sekunden", r"segundos", r"letter", r"lettre",
    r"buchstabe", r"letra", r"(?:between|entre|zwischen)\b.*\d{4}.*\d{4}",
)
_CODE_CUES_STRONG = (
    r"python", r"code\b", r"código", r"programm?e?\b", r"script",
)
_WEB_CUES = (
    r"news", r"nouvelles", r"actualités", r"nachrichten", r"noticias", r"weather", r"météo",
    r"wetter", r"tiempo\b", r"clima", r"bitcoin", r"stock price", r"cours de", r"aktienkurs",
    r"today", r"aujourd.hui", r"heute", r"hoy\b", r"yesterday", r"gestern", r"ayer", r"current",
    r"actuel", r"aktuell", r"latest", r"dernières", r"neueste", r"últimas", r"football",
    r"fußball", r"fútbol",
)
_WEB_CUES_STRONG = (
    r"(?:on|search) the web", r"sur (?:le )?web", r"im (?:web|internet)",
    r"en (?:la )?(?:web|internet)", r"sur internet", r"the internet", r"online", r"en ligne",
    r"web search",
)
# fmt: on


def specialists(ctx: BuildContext) -> dict[str, Route]:
    """The four specialists of the default graph, by route."""
    t = ctx.tools
    return {
        "data": Route(
            description="questions about the shop's customers, products, orders, sales or revenue",
            examples=(
                "How many orders came from Germany?",
                "Which customers spent the most last year?",
                "What was the total revenue in March?",
                "List the top 5 products by units sold.",
                "Combien de clients ont passé une commande en 2026 ?",
                "Wie viele Produkte kosten mehr als 20 Euro?",
                "¿Qué cliente hizo más pedidos?",
                "Quel est le prix moyen des produits de la catégorie Coffee ?",
                "Wie viele Bestellungen haben den Status shipped?",
                "¿Cuántos pedidos se hicieron en enero?",
                "Wie viele Kunden haben wir in Österreich?",
                "Welche Kategorie hat die meisten Produkte?",
                "Quel est le prix unitaire du produit le moins cher ?",
                "Combien de clients habitent à Lyon ?",
                "¿Cuál es el precio del molinillo de café?",
                "What is the price of the espresso machine?",
            ),
            keywords=_DATA_CUES,
            agent=Agent(
                name="analyst",
                tier="reasoning",
                tool_choice="required_first",
                tools=t("sql_schema", "sql_query"),
                workflow=SqlWorkflow(),
                instructions=(
                    "You are a data analyst with read-only SQL access to the shop database. "
                    "Call sql_schema to see the tables, then call sql_query to run your SQL; "
                    "never answer with SQL you did not run. Answer with what the query "
                    "returned and show the SQL. " + _STYLE
                ),
            ),
        ),
        "docs": Route(
            description=(
                "company policies and handbook: returns, shipping, leave, expenses, security"
            ),
            examples=(
                "How long do I have to return an item?",
                "How many vacation days do employees get?",
                "What is the password policy?",
                "How much does shipping to Italy cost?",
                "Combien de temps dure la garantie sur une bouilloire ?",
                "Wie muss ich eine Holzbrett pflegen?",
                "¿Cuántos días de baja por paternidad hay?",
                "Quelle est la politique de mots de passe de l'entreprise ?",
                "Wie lange werden Kundendaten gespeichert?",
                "¿Se puede devolver una tarjeta regalo?",
                "How do I care for a cast-iron pan according to the care guide?",
                "Combien de jours de télétravail sont autorisés ?",
                "Wie viele Urlaubstage haben Teilzeitkräfte?",
                "¿Cuánto cuesta el envío a Francia?",
                "Wie hoch ist das Spesenlimit für Hotels?",
                "Quel est le délai de remboursement après un retour ?",
                "Ab welchem Betrag ist der Versand kostenlos?",
                "¿Cuándo se bloquea la pantalla del portátil?",
            ),
            keywords=_DOCS_CUES,
            agent=Agent(
                name="librarian",
                tier="reasoning",
                tool_choice="required_first",
                tools=t("retrieve"),
                workflow=DocsWorkflow(),
                instructions=(
                    "You answer from the company's documents. Retrieve passages, then answer "
                    "and cite them as [source#position]. " + _STYLE
                ),
            ),
        ),
        "code": Route(
            description="writing or running Python code, algorithms, exact calculations",
            examples=(
                "Write a Python function that reverses a string.",
                "Compute 2**100 exactly.",
                "Sort this list with code.",
                "What is the 30th Fibonacci number?",
                "Calcule 3 puissance 40 exactement.",
                "Berechne die Quadratwurzel von 2 auf 10 Stellen.",
                "¿Cuántos números pares hay entre 1 y 500?",
                "Écris une fonction Python qui teste si un nombre est premier.",
                "Wie viele Tage liegen zwischen zwei Daten? Rechne mit Python.",
                "Calcula el mínimo común múltiplo de 12 y 18.",
                "Combien de minutes y a-t-il dans une année ?",
                "Was ist 7 hoch 15?",
                "Welche Zahl ist die Wurzel aus 144?",
                "How many days are there between two dates?",
            ),
            keywords=_CODE_CUES,
            strong_keywords=_CODE_CUES_STRONG,
            agent=Agent(
                name="coder",
                tier="reasoning",
                tool_choice="required_first",
                tools=t("run_python"),
                workflow=CodeWorkflow(),
                instructions=(
                    "You are a senior engineer. Run code to check results before answering; "
                    "show the code. " + _STYLE
                ),
            ),
        ),
        "web": Route(
            description="news, current events, or facts to look up on the public web",
            examples=(
                "What is the latest news about the euro?",
                "Search the web for the weather in Paris.",
                "Who won yesterday's football match?",
                "What is the current price of bitcoin?",
                "Quelles sont les dernières nouvelles sur l'inflation ?",
                "Wie wird das Wetter morgen in Berlin?",
                "¿Quién ganó las elecciones de ayer?",
                "Cherche sur internet le cours de l'action Apple.",
                "Suche im Web nach dem aktuellen Ölpreis.",
                "Busca en internet las noticias de hoy sobre Madrid.",
            ),
            keywords=_WEB_CUES,
            strong_keywords=_WEB_CUES_STRONG,
            agent=Agent(
                name="researcher",
                tier="reasoning",
                tool_choice="required_first",
                tools=t("web_search"),
                workflow=WebWorkflow(),
                instructions=(
                    "You research on the web. Search, then answer citing URLs. If search is "
                    "unavailable, say so and mark anything from memory as unverified. " + _STYLE
                ),
            ),
        ),
    }


def build_default_graph(ctx: BuildContext) -> StateGraph[GraphState]:
    """router -> analyst | librarian | coder | researcher (each with its tool loop)."""
    return router_graph(
        ctx.tiers,
        specialists(ctx),
        router_tier="router",
        default="docs",
        embedder=ctx.embedder() if ctx.settings.router.semantic else None,
        margin=ctx.settings.router.margin,
    )


def build_direct_graph(ctx: BuildContext) -> StateGraph[GraphState]:
    """No router, no tools: the question goes straight to the reasoning tier."""
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    agent = Agent(name="generalist", tier="reasoning", instructions="You are helpful. " + _STYLE)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


def build_planner_graph(ctx: BuildContext) -> StateGraph[PlannerState]:
    """The router tier plans; a reasoning-tier executor with every tool carries it out."""
    executor = Agent(
        name="executor",
        tier="reasoning",
        tools=ctx.tools("sql_schema", "sql_query", "retrieve", "run_python", "web_search"),
        instructions="You carry out one step at a time with your tools. " + _STYLE,
    )
    return planner_graph(ctx.tiers, planner_tier="router", executor=executor)


def build_supervisor_graph(ctx: BuildContext) -> StateGraph[GraphState]:
    """A router-tier supervisor hands the question to specialists until it is answered."""
    return supervisor_graph(ctx.tiers, supervisor_tier="router", workers=specialists(ctx))


BUILTIN_GRAPHS: dict[str, GraphFactory] = {
    "default": build_default_graph,
    "direct": build_direct_graph,
    "planner": build_planner_graph,
    "supervisor": build_supervisor_graph,
}
