"""Layer (a) of the SQL tool: parse the query and accept only one read-only query.

The query is parsed with sqlglot in the backend's dialect and every node of the tree is
checked against allowlists (``_sql_allow``): node types, function names, cast types, and
tables (the schema's tables plus the CTEs in scope). A denylist would miss whatever the
next engine version adds; an allowlist fails closed. The SQL that runs is regenerated
from the checked tree (comments dropped), so the engine executes exactly what was
checked, not a text the engine might tokenise differently (nested comments, quoting).

This is the only module importing sqlglot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlglot import Token, TokenType, exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError

from tierflow.tools.sql import allow as allow

__all__ = ["QueryGuard", "QueryRejected", "UnknownTable"]

# A query this long is not an analyst's question; it also bounds the parser's work.
MAX_QUERY_CHARS = 20_000


def _classes(names: frozenset[str]) -> frozenset[type[exp.Expr]]:
    # getattr raises at import if a name vanished in a sqlglot upgrade: fail loudly.
    return frozenset(getattr(exp, name) for name in names)


_ALLOWED_NODES = _classes(allow.STRUCTURE | allow.OPERATORS | allow.FUNCTIONS)
_DATA_TYPES = frozenset(exp.DataType.Type[name] for name in allow.DATA_TYPES)
# Tokens a query may start with; anything else is refused before parsing, which also
# keeps sqlglot from logging its "falling back to Command" warning for VACUUM and friends.
_QUERY_STARTS = frozenset(
    {TokenType.SELECT, TokenType.WITH, TokenType.VALUES, TokenType.FROM, TokenType.L_PAREN}
)
_QUERY_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery)


class QueryRejected(Exception):
    """The query is not a single read-only query within the allowlists; says what to fix."""


class UnknownTable(QueryRejected):
    """The query names a table outside the schema (the caller may re-read the schema once)."""


@dataclass(frozen=True, kw_only=True)
class QueryGuard:
    """Checks queries for one database: its dialect, tables and schema qualifiers.

    ``tables`` and ``schemas`` are compared case-insensitively, as the engines resolve
    unquoted names; a quoted name that differs only in case then fails in the engine,
    never reaches another table.
    """

    dialect: str  # a sqlglot dialect name: "sqlite", "duckdb", "postgres"
    tables: frozenset[str]
    schemas: frozenset[str] = frozenset()  # qualifiers allowed before a table name
    max_rows_hint: int = 200  # only used in messages

    def check(self, sql: str) -> str:
        """The SQL to execute for ``sql``, or :class:`QueryRejected` saying why not."""
        if len(sql) > MAX_QUERY_CHARS:
            raise QueryRejected(f"query is longer than {MAX_QUERY_CHARS} characters")
        dialect = Dialect.get_or_raise(self.dialect)
        try:
            tokens = dialect.tokenize(sql)
            self._check_start(tokens)
            parsed = dialect.parser().parse(tokens, sql)  # tokenised once, checked and parsed
            statements = [s for s in parsed if s is not None]
        except SqlglotError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise QueryRejected(
                f"could not parse the query as {self.dialect} SQL: {first}"
            ) from None
        except RecursionError:
            raise QueryRejected("query is nested too deeply") from None
        if len(statements) != 1:
            raise QueryRejected(
                f"only a single SELECT is allowed; got {len(statements)} statements"
            )
        (root,) = statements
        # "(SELECT ...)": unwrap, SQLite refuses the outer parentheses.
        while isinstance(root, exp.Subquery) and {k for k, v in root.args.items() if v} == {"this"}:
            root = root.this
        if not isinstance(root, _QUERY_ROOTS):
            raise QueryRejected(f"only a single SELECT is allowed; got {_keyword(root)}")
        for node in root.walk():
            self._check_node(node)
        return root.sql(dialect=self.dialect, comments=False)

    def _check_start(self, tokens: list[Token]) -> None:
        if not tokens:
            raise QueryRejected("the query is empty; send one SELECT statement")
        first = tokens[0]
        if first.token_type in _QUERY_STARTS:
            return
        word = first.text.split()[0].upper() if first.text.strip() else first.token_type.name
        if word == "EXPLAIN":
            raise QueryRejected(
                "EXPLAIN is not allowed: run the SELECT itself "
                f"(results are capped at {self.max_rows_hint} rows)"
            )
        raise QueryRejected(f"only a single SELECT is allowed; got {word}")

    def _check_node(self, node: exp.Expr) -> None:
        kind = type(node)
        if kind is exp.Anonymous:
            name = node.name.lower()
            if name not in allow.ANONYMOUS_FUNCTIONS.get(self.dialect, frozenset()):
                raise QueryRejected(f"function {name}() is not allowed{_FUNCTION_HINT}")
            return
        if kind not in _ALLOWED_NODES:
            raise QueryRejected(_refusal(node, self.dialect))
        if isinstance(node, exp.Table):
            self._check_table(node)
        elif kind is exp.DataType and node.this not in _DATA_TYPES:
            raise QueryRejected(f"cast to {node.sql(dialect=self.dialect)} is not allowed")

    def _check_table(self, table: exp.Table) -> None:
        extra = sorted(k for k, v in table.args.items() if v and k not in allow.TABLE_ARGS)
        if extra or not isinstance(table.this, exp.Identifier):
            raise QueryRejected(
                "only plain table names may follow FROM/JOIN (no table functions, files "
                f"or table options); got {table.sql(dialect=self.dialect)}"
            )
        name = table.name
        qualifier = table.args.get("db")
        if qualifier is None and name.lower() in _ctes_in_scope(table):
            return
        if qualifier is not None and qualifier.name.lower() not in self.schemas:
            raise QueryRejected(
                f"schema {qualifier.name!r} is not available; use the table names from sql_schema"
            )
        if name.lower() not in self.tables:
            listed = ", ".join(sorted(self.tables)) or "(none)"
            raise UnknownTable(
                f"table {name!r} is not in the schema; available tables: {listed} "
                "(call sql_schema for their columns)"
            )


_FUNCTION_HINT = (
    "; use standard aggregate, string, date, math and window functions "
    "(COUNT, SUM, AVG, ROUND, UPPER, SUBSTR, CAST, COALESCE, CASE, DATE functions...)"
)


def _keyword(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return node.key.upper()


def _refusal(node: exp.Expr, dialect: str) -> str:
    if isinstance(node, exp.DML | exp.DDL | exp.Command):
        return (
            f"only a single SELECT is allowed; got {_keyword(node)} "
            "(data-modifying statements are refused anywhere, WITH included)"
        )
    if isinstance(node, exp.Func):
        # The name as the dialect spells it (LPAD, not sqlglot's PAD), for the model to recognise.
        name = node.sql(dialect=dialect).split("(", 1)[0].strip() or node.key
        return f"function {name.lower()}() is not allowed{_FUNCTION_HINT}"
    return f"{node.key.upper()} is not allowed in a query here"


def _with_of(node: exp.Expr) -> exp.With | None:
    found = node.args.get("with_") or node.args.get("with")
    return found if isinstance(found, exp.With) else None


def _cte_names(ctes: Iterable[exp.Expr]) -> Iterator[str]:
    for cte in ctes:
        if isinstance(cte, exp.CTE):
            yield cte.alias_or_name.lower()


def _ctes_in_scope(table: exp.Table) -> set[str]:
    """CTE names visible at ``table``: each enclosing WITH's CTEs, by SQL scoping.

    Inside a CTE's own body only the CTEs defined before it are visible (and itself when
    the WITH is RECURSIVE); a same-named table elsewhere stays a real table, so a CTE
    named like a system table cannot smuggle that table into another scope.
    """
    names: set[str] = set()
    child: exp.Expr = table
    parent = table.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            index = next(i for i, c in enumerate(ctes) if c is child)
            names.update(_cte_names(ctes[:index]))
            if parent.args.get("recursive"):
                names.update(_cte_names(ctes[index : index + 1]))
        else:
            with_ = _with_of(parent)
            if with_ is not None and with_ is not child:
                names.update(_cte_names(with_.expressions))
        child, parent = parent, parent.parent
    return names
